//! The GGUF tokenizer against llama.cpp's tokenisation of SmolLM2 (`smollm2-chat.json`).
//!
//! The vocabulary is read from the default chat model's GGUF metadata.

mod common;

use common::{golden as load_golden, ids};
use helixflow_core::chat_model::vocab_from_gguf;
use helixflow_core::gguf::GgufFile;
use helixflow_core::tokenizer::{IncrementalDecoder, Tokenizer};
use serde_json::Value;

fn golden() -> Value {
    load_golden("smollm2-chat.json")
}

/// The tokenizer built from the default chat model's GGUF metadata.
fn tokenizer() -> Option<Tokenizer> {
    let gguf = GgufFile::open(common::chat_gguf()).unwrap();
    Some(Tokenizer::from_gguf_vocab(&vocab_from_gguf(&gguf).unwrap()).unwrap())
}

fn str_field<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap()
}

#[test]
fn tokenization_matches_llama_cpp() {
    let Some(tok) = tokenizer() else { return };
    let golden = golden();
    let cases = golden["tokenization"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let text = str_field(case, "text");
        common::assert_encodes_like_llama_cpp(&tok, case);
        // Decoding what was encoded as text gives the text back.
        assert_eq!(
            tok.decode(&ids(&case["ids_special_as_text"]), true)
                .unwrap(),
            text
        );
    }
}

#[test]
fn prompts_match_llama_cpp() {
    let Some(tok) = tokenizer() else { return };
    for case in golden()["cases"].as_array().unwrap() {
        let prompt = str_field(case, "prompt");
        assert_eq!(
            tok.encode(prompt, true).unwrap(),
            ids(&case["prompt_token_ids"]),
            "{prompt:?}"
        );
    }
}

#[test]
fn completions_decode_to_llama_cpp_text() {
    let Some(tok) = tokenizer() else { return };
    for case in golden()["cases"].as_array().unwrap() {
        let completion = ids(&case["greedy_completion_token_ids"]);
        let expected = str_field(case, "greedy_completion_text");
        assert_eq!(tok.decode(&completion, true).unwrap(), expected);

        let mut decoder = IncrementalDecoder::new();
        let mut streamed = String::new();
        for id in &completion {
            let delta = decoder.push(&tok, *id).unwrap();
            assert!(!delta.contains('\u{FFFD}'), "{delta:?}");
            streamed.push_str(&delta);
        }
        streamed.push_str(&decoder.finish(&tok).unwrap());
        assert_eq!(streamed, expected);

        // With the prompt as context the stream is the same text.
        let prompt = ids(&case["prompt_token_ids"]);
        let mut decoder = IncrementalDecoder::with_context(&prompt);
        let mut streamed = String::new();
        for id in &completion {
            streamed.push_str(&decoder.push(&tok, *id).unwrap());
        }
        streamed.push_str(&decoder.finish(&tok).unwrap());
        assert_eq!(streamed, expected);
    }
}

#[test]
fn streaming_never_splits_characters() {
    let Some(tok) = tokenizer() else { return };
    for case in golden()["tokenization"].as_array().unwrap() {
        let text = str_field(case, "text");
        let ids = ids(&case["ids_special_as_text"]);
        let mut decoder = IncrementalDecoder::new();
        let mut deltas: Vec<String> = ids
            .iter()
            .map(|id| decoder.push(&tok, *id).unwrap())
            .collect();
        deltas.push(decoder.finish(&tok).unwrap());
        for delta in &deltas {
            assert!(!delta.contains('\u{FFFD}'), "{text:?}: {deltas:?}");
        }
        assert_eq!(deltas.concat(), text);
    }
}

#[test]
fn special_tokens_of_smollm2() {
    let Some(tok) = tokenizer() else { return };
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.bos_token(), Some("<|im_start|>"));
    assert_eq!(tok.eos_token(), Some("<|im_end|>"));
    assert_eq!(tok.bos_token_id(), Some(1));
    assert!(!tok.add_bos(), "the GGUF says add_bos_token = false");
    // EOS first, then the other end-of-turn control tokens present.
    assert_eq!(tok.end_of_turn_ids(), &[2, 0]);
    assert!(tok.is_special(2) && !tok.is_special(504));
    assert_eq!(
        tok.decode(&[1, 4093, 198, 6004, 2], false).unwrap(),
        "<|im_start|>user\nhi<|im_end|>"
    );
    assert_eq!(
        tok.decode(&[1, 4093, 198, 6004, 2], true).unwrap(),
        "user\nhi"
    );
}

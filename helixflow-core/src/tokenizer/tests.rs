//! Tests of the tokenizer on small synthetic vocabularies (the real model is covered by
//! `tests/tokenizer_golden.rs`).

use super::*;

const UNK: i32 = GgufVocab::TOKEN_TYPE_UNKNOWN;
const CONTROL: i32 = GgufVocab::TOKEN_TYPE_CONTROL;
const NORMAL: i32 = GgufVocab::TOKEN_TYPE_NORMAL;
const BYTE: i32 = GgufVocab::TOKEN_TYPE_BYTE;

/// A SentencePiece vocabulary in the layout of Llama 2 GGUFs: `<unk> <s> </s>`, 256 byte tokens,
/// then pieces with scores (higher merges first).
fn spm_vocab() -> GgufVocab {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![UNK, CONTROL, CONTROL];
    let mut scores = vec![0.0, 0.0, 0.0];
    for byte in 0..=255u8 {
        tokens.push(format!("<0x{byte:02X}>"));
        types.push(BYTE);
        scores.push(0.0);
    }
    let pieces: [(&str, f32); 19] = [
        ("▁", -1.0),
        ("H", -2.0),
        ("e", -3.0),
        ("l", -4.0),
        ("o", -5.0),
        ("w", -6.0),
        ("r", -7.0),
        ("d", -8.0),
        ("ll", -10.0),
        ("▁H", -11.0),
        ("▁He", -12.0),
        ("▁Hell", -13.0),
        ("▁Hello", -14.0),
        ("▁w", -15.0),
        ("or", -16.0),
        ("▁wor", -17.0),
        ("▁worl", -18.0),
        ("▁world", -19.0),
        ("!", -20.0),
    ];
    for (piece, score) in pieces {
        tokens.push(piece.into());
        types.push(NORMAL);
        scores.push(score);
    }
    GgufVocab {
        model: "llama".into(),
        pre: None,
        tokens,
        token_types: types,
        scores,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        unknown_token_id: Some(0),
        ..GgufVocab::default()
    }
}

fn id(tokenizer: &Tokenizer, token: &str) -> u32 {
    tokenizer
        .token_to_id(token)
        .unwrap_or_else(|| panic!("{token} not in vocabulary"))
}

fn byte_id(byte: u8) -> u32 {
    3 + u32::from(byte)
}

#[test]
fn sentencepiece_merges_words_with_a_prefix_space() {
    let tok = Tokenizer::from_gguf_vocab(&spm_vocab()).unwrap();
    let ids = tok.encode("Hello world!", true).unwrap();
    assert_eq!(
        ids,
        vec![id(&tok, "▁Hello"), id(&tok, "▁world"), id(&tok, "!")]
    );
    assert_eq!(tok.decode(&ids, true).unwrap(), "Hello world!");
}

#[test]
fn sentencepiece_falls_back_to_bytes() {
    let tok = Tokenizer::from_gguf_vocab(&spm_vocab()).unwrap();
    let ids = tok.encode("Hello é", false).unwrap();
    // "é" is U+00E9 = C3 A9 in UTF-8; the space before it is "▁".
    assert_eq!(
        ids,
        vec![
            id(&tok, "▁Hello"),
            id(&tok, "▁"),
            byte_id(0xC3),
            byte_id(0xA9)
        ]
    );
    assert_eq!(tok.decode(&ids, true).unwrap(), "Hello é");
}

#[test]
fn sentencepiece_without_space_prefix() {
    let mut vocab = spm_vocab();
    vocab.add_space_prefix = Some(false);
    let tok = Tokenizer::from_gguf_vocab(&vocab).unwrap();
    let ids = tok.encode("Hello", false).unwrap();
    assert_eq!(ids[0], id(&tok, "H"));
    assert_eq!(tok.decode(&ids, true).unwrap(), "Hello");
}

#[test]
fn control_tokens_parse_only_when_asked() {
    let tok = Tokenizer::from_gguf_vocab(&spm_vocab()).unwrap();
    // As llama.cpp does, the text after a control token gets its own prefix space.
    assert_eq!(
        tok.encode("<s>Hello", true).unwrap(),
        vec![1, id(&tok, "▁Hello")]
    );
    let as_text = tok.encode("<s>Hello", false).unwrap();
    assert!(!as_text.contains(&1), "{as_text:?}");
    assert_eq!(tok.decode(&as_text, true).unwrap(), "<s>Hello");
    // Only the very first token loses its prefix space (as in llama.cpp and Hugging Face).
    assert_eq!(
        tok.decode(&[1, id(&tok, "▁Hello"), 2], false).unwrap(),
        "<s> Hello</s>"
    );
    assert_eq!(
        tok.decode(&[1, id(&tok, "▁Hello"), 2], true).unwrap(),
        "Hello"
    );
}

/// As llama.cpp, a GGUF's `</s>` ends generation and is a control token even where the file
/// types it as a normal piece (Gemma 3's does), when it is not the EOS token.
#[test]
fn named_end_of_turn_tokens_count_whatever_their_type() {
    let mut vocab = spm_vocab();
    vocab.token_types[2] = NORMAL;
    vocab.eos_token_id = Some(1);
    let tok = Tokenizer::from_gguf_vocab(&vocab).unwrap();
    assert!(
        tok.end_of_turn_ids().contains(&2),
        "{:?}",
        tok.end_of_turn_ids()
    );
    assert!(tok.is_special(2));
}

#[test]
fn special_token_bookkeeping() {
    let tok = Tokenizer::from_gguf_vocab(&spm_vocab()).unwrap();
    assert_eq!(tok.bos_token(), Some("<s>"));
    assert_eq!(tok.eos_token(), Some("</s>"));
    assert_eq!(tok.bos_token_id(), Some(1));
    assert!(tok.add_bos(), "SentencePiece models add BOS by default");
    assert_eq!(tok.end_of_turn_ids(), &[2]);
    assert!(tok.is_special(1) && tok.is_special(0));
    assert!(!tok.is_special(byte_id(b'a')));
    assert_eq!(tok.vocab_size(), 3 + 256 + 19);
    assert_eq!(tok.id_to_token(1).as_deref(), Some("<s>"));
}

#[test]
fn user_defined_tokens_are_always_matched() {
    let mut vocab = spm_vocab();
    vocab.tokens.push("<tool>".into());
    vocab.token_types.push(GgufVocab::TOKEN_TYPE_USER_DEFINED);
    vocab.scores.push(0.0);
    let tool = (vocab.tokens.len() - 1) as u32;
    let tok = Tokenizer::from_gguf_vocab(&vocab).unwrap();
    for parse_special in [true, false] {
        let ids = tok.encode("Hello<tool>", parse_special).unwrap();
        assert_eq!(ids, vec![id(&tok, "▁Hello"), tool], "{parse_special}");
    }
    assert!(!tok.is_special(tool));
    assert_eq!(tok.decode(&[tool], true).unwrap(), "<tool>");
}

fn stream(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    let mut decoder = IncrementalDecoder::new();
    let mut deltas: Vec<String> = ids
        .iter()
        .map(|id| decoder.push(tok, *id).unwrap())
        .collect();
    deltas.push(decoder.finish(tok).unwrap());
    deltas
}

#[test]
fn incremental_decoding_keeps_spaces_and_whole_characters() {
    let tok = Tokenizer::from_gguf_vocab(&spm_vocab()).unwrap();
    let text = "Hello 日本語 world 🚀!";
    let ids = tok.encode(text, false).unwrap();
    let deltas = stream(&tok, &ids);
    assert_eq!(deltas.concat(), tok.decode(&ids, true).unwrap());
    assert_eq!(deltas.concat(), text);
    for delta in &deltas {
        assert!(
            !delta.contains('\u{FFFD}'),
            "half a character in {deltas:?}"
        );
    }
    // "▁world" comes after a space-less byte run and must keep its space.
    assert!(deltas.contains(&" world".to_string()), "{deltas:?}");
}

#[test]
fn incremental_decoding_skips_special_tokens() {
    let tok = Tokenizer::from_gguf_vocab(&spm_vocab()).unwrap();
    let ids = [id(&tok, "▁Hello"), 1, id(&tok, "▁world"), 2];
    let deltas = stream(&tok, &ids);
    assert_eq!(deltas, vec!["Hello", "", " world", "", ""]);
}

#[test]
fn incremental_decoding_with_context_keeps_the_first_space() {
    let tok = Tokenizer::from_gguf_vocab(&spm_vocab()).unwrap();
    let prompt = tok.encode("Hello", false).unwrap();
    let mut decoder = IncrementalDecoder::with_context(&prompt);
    assert_eq!(decoder.push(&tok, id(&tok, "▁world")).unwrap(), " world");
    assert_eq!(decoder.finish(&tok).unwrap(), "");
}

#[test]
fn incremental_finish_flushes_an_incomplete_character() {
    let tok = Tokenizer::from_gguf_vocab(&spm_vocab()).unwrap();
    let mut decoder = IncrementalDecoder::new();
    assert_eq!(decoder.push(&tok, id(&tok, "▁Hello")).unwrap(), "Hello");
    // The first two of the three bytes of "日" (E6 97 A5).
    assert_eq!(decoder.push(&tok, byte_id(0xE6)).unwrap(), "");
    assert_eq!(decoder.push(&tok, byte_id(0x97)).unwrap(), "");
    assert!(decoder.finish(&tok).unwrap().contains('\u{FFFD}'));
}

#[test]
fn from_file_reads_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("tokenizer.json");
    let config = dir.path().join("tokenizer_config.json");
    // Save the synthetic tokenizer in Hugging Face's format, then load it back.
    let built = Tokenizer::from_gguf_vocab(&spm_vocab()).unwrap();
    built.inner.save(&json, false).unwrap();
    std::fs::write(
        &config,
        r#"{"bos_token": {"content": "<s>"}, "eos_token": "</s>", "add_bos_token": true,
            "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"}"#,
    )
    .unwrap();
    let tok = Tokenizer::from_file(&json, Some(&config)).unwrap();
    assert_eq!(tok.bos_token(), Some("<s>"));
    assert_eq!(tok.eos_token_id(), Some(2));
    assert!(tok.add_bos());
    assert!(tok.chat_template().unwrap().starts_with("{{ bos_token }}"));
    assert!(tok.is_special(1) && !tok.is_special(byte_id(b'a')));
    assert_eq!(tok.end_of_turn_ids(), &[2]);
    assert_eq!(
        tok.encode("<s>Hello world!", true).unwrap(),
        built.encode("<s>Hello world!", true).unwrap()
    );
    assert_eq!(
        tok.encode("<s>", false).unwrap(),
        built.encode("<s>", false).unwrap()
    );

    let missing = dir.path().join("nope.json");
    assert!(matches!(
        Tokenizer::from_file(&missing, None),
        Err(Error::Tokenizer(_))
    ));
}

#[test]
fn incremental_decoding_of_a_long_stream() {
    let tok = Tokenizer::from_gguf_vocab(&spm_vocab()).unwrap();
    let text = "Hello world! 日本 ".repeat(120);
    let ids = tok.encode(&text, false).unwrap();
    assert!(ids.len() > 1000, "long enough to compact the window");
    let deltas = stream(&tok, &ids);
    assert_eq!(deltas.concat(), tok.decode(&ids, true).unwrap());
}

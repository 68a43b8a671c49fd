//! Any text through the GGUF tokenizers (byte-level BPE and SentencePiece): encoding with
//! and without special tokens, finding special-token text, and decoding back, whole and one
//! token at a time, never crash; byte-level BPE gives the text back exactly.
#![no_main]

use std::sync::OnceLock;

use helixflow_core::tokenizer::{GgufVocab, IncrementalDecoder, Tokenizer};
use libfuzzer_sys::fuzz_target;

/// GPT-2's byte-to-character map, so that every byte has a token.
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut chars = vec!['\0'; 256];
    for &b in &printable {
        chars[b as usize] = char::from_u32(b).unwrap();
    }
    let mut next = 256;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            chars[b as usize] = char::from_u32(next).unwrap();
            next += 1;
            printable.push(b);
        }
    }
    chars
}

fn bpe() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let chars = byte_chars();
        let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        let g = chars[b' ' as usize];
        let merges = vec![format!("{g} t"), format!("{g}t h"), "h e".into(), "i n".into()];
        tokens.extend([format!("{g}t"), format!("{g}th"), "he".into(), "in".into()]);
        let mut token_types = vec![GgufVocab::TOKEN_TYPE_NORMAL; tokens.len()];
        for special in ["<|im_start|>", "<|im_end|>", "<|endoftext|>"] {
            tokens.push(special.into());
            token_types.push(3); // control
        }
        let vocab = GgufVocab {
            model: "gpt2".into(),
            pre: Some("smollm".into()),
            eos_token_id: Some(tokens.len() as u32 - 2),
            tokens,
            token_types,
            merges,
            ..GgufVocab::default()
        };
        Tokenizer::from_gguf_vocab(&vocab).expect("the fuzz vocabulary builds")
    })
}

fn spm() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
        let mut token_types = vec![2, 3, 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            token_types.push(6); // byte
        }
        for piece in ["\u{2581}", "\u{2581}the", "a", "e", "th", "he", "\u{2581}a"] {
            tokens.push(piece.into());
            token_types.push(GgufVocab::TOKEN_TYPE_NORMAL);
        }
        let scores = (0..tokens.len()).map(|i| -(i as f32)).collect();
        let vocab = GgufVocab {
            model: "llama".into(),
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            unknown_token_id: Some(0),
            tokens,
            token_types,
            scores,
            ..GgufVocab::default()
        };
        Tokenizer::from_gguf_vocab(&vocab).expect("the fuzz vocabulary builds")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for (tokenizer, exact) in [(bpe(), true), (spm(), false)] {
        let _ = tokenizer.find_special_text(&text);
        let _ = tokenizer.encode(&text, true);
        let Ok(ids) = tokenizer.encode(&text, false) else {
            continue;
        };
        let whole = tokenizer.decode(&ids, false).expect("our own ids decode");
        let mut decoder = IncrementalDecoder::new();
        let mut pieces = String::new();
        for &id in &ids {
            pieces.push_str(&decoder.push(tokenizer, id).expect("our own ids decode"));
        }
        pieces.push_str(&decoder.finish(tokenizer).expect("the decoder finishes"));
        if exact {
            assert_eq!(whole, text, "byte-level BPE gives the text back");
            assert_eq!(pieces, text, "streamed decoding gives the text back");
        }
    }
});

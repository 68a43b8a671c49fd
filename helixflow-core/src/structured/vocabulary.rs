//! A model's vocabulary as llguidance sees it: the bytes of every token, with special tokens
//! marked so that no grammar's text can produce them.

use std::collections::HashMap;
use std::sync::Arc;

use tokenizers::DecoderWrapper;
use toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};

use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The token environment llguidance builds its masks over: `vocab_size` tokens (the model's
/// logits, which may outnumber the tokenizer's tokens), ending on `end_ids`.
pub(super) fn token_env(
    tokenizer: &Tokenizer,
    vocab_size: usize,
    end_ids: &[u32],
) -> Result<TokEnv> {
    // GPT-2's alphabet for byte-level BPE; SentencePiece pieces otherwise.
    let alphabet = tokenizer
        .decoder()
        .is_some_and(is_byte_level)
        .then(gpt2_bytes);
    let words: Vec<Vec<u8>> = (0..vocab_size as u32)
        .map(|id| match (tokenizer.id_to_token(id), &alphabet) {
            (None, _) => Vec::new(), // padding beyond the tokenizer: never allowed
            (Some(text), _) if tokenizer.is_special(id) => {
                let mut word = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                word.extend_from_slice(text.as_bytes());
                word
            }
            (Some(text), Some(alphabet)) => byte_level_bytes(&text, alphabet),
            (Some(text), None) => sentencepiece_bytes(&text),
        })
        .collect();
    let Some(&first_end) = end_ids.first() else {
        return Err(Error::InvalidRequest(
            "structured outputs need a model with an end-of-sequence token".into(),
        ));
    };
    let vocab = u32::try_from(vocab_size)
        .map_err(|_| Error::InvalidRequest("the vocabulary is too large".into()))?;
    let info = TokRxInfo::new(vocab, first_end);
    let ends: Vec<u32> = end_ids.iter().copied().filter(|&id| id < vocab).collect();
    let trie = TokTrie::from(&info, &words).with_eos_tokens(&ends);
    Ok(Arc::new(ApproximateTokEnv::new(trie)))
}

/// Whether the decoder maps GPT-2's printable characters back to bytes (byte-level BPE).
fn is_byte_level(decoder: &DecoderWrapper) -> bool {
    match decoder {
        DecoderWrapper::ByteLevel(_) => true,
        DecoderWrapper::Sequence(sequence) => sequence.get_decoders().iter().any(is_byte_level),
        _ => false,
    }
}

/// GPT-2's byte-level alphabet: the character that spells each byte. Printable bytes spell
/// themselves; the other 68, in order, were moved to U+0100, U+0101, …
fn gpt2_bytes() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, 33..=126 | 161..=172 | 174..=255);
    let mut moved = 0u32;
    (0..=255u8)
        .map(|b| {
            let spelling = if printable(b) {
                u32::from(b)
            } else {
                moved += 1;
                255 + moved
            };
            (char::from_u32(spelling).expect("below U+0200"), b)
        })
        .collect()
}

/// A byte-level BPE token's bytes, its characters read back through `alphabet`.
fn byte_level_bytes(text: &str, alphabet: &HashMap<char, u8>) -> Vec<u8> {
    text.chars()
        .map(|c| alphabet.get(&c).copied().unwrap_or(b'?'))
        .collect()
}

/// A SentencePiece token's bytes: `▁` is a space, `<0xNN>` one raw byte.
fn sentencepiece_bytes(text: &str) -> Vec<u8> {
    if let Some(hex) = text.strip_prefix("<0x").and_then(|t| t.strip_suffix('>')) {
        if let Ok(byte) = u8::from_str_radix(hex, 16) {
            if hex.len() == 2 {
                return vec![byte];
            }
        }
    }
    text.replace('\u{2581}', " ").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_characters_map_back_to_bytes() {
        let alphabet = gpt2_bytes();
        assert_eq!(byte_level_bytes("Ġhello", &alphabet), b" hello");
        assert_eq!(byte_level_bytes("Ċ", &alphabet), b"\n");
        assert_eq!(byte_level_bytes("{\"", &alphabet), b"{\"");
        // 'é' in UTF-8 is C3 A9, spelled Ã© by GPT-2's table.
        assert_eq!(byte_level_bytes("Ã©", &alphabet), "é".as_bytes());
    }

    #[test]
    fn sentencepiece_spaces_and_byte_tokens() {
        assert_eq!(sentencepiece_bytes("\u{2581}the"), b" the");
        assert_eq!(sentencepiece_bytes("<0x0A>"), b"\n");
        assert_eq!(sentencepiece_bytes("<0x0A0>"), b"<0x0A0>");
    }
}

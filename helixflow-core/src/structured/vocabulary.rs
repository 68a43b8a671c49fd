//! A model's vocabulary as llguidance sees it: the bytes of every token, with special tokens
//! marked so that no grammar's text can produce them.

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
    let byte_level = tokenizer.decoder().is_some_and(is_byte_level);
    let words: Vec<Vec<u8>> = (0..vocab_size as u32)
        .map(|id| match tokenizer.id_to_token(id) {
            None => Vec::new(), // padding beyond the tokenizer: never allowed
            Some(text) if tokenizer.is_special(id) => {
                let mut word = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                word.extend_from_slice(text.as_bytes());
                word
            }
            Some(text) if byte_level => byte_level_bytes(&text),
            Some(text) => sentencepiece_bytes(&text),
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

/// A byte-level BPE token's bytes: GPT-2 spells each byte as one printable character.
fn byte_level_bytes(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| {
            let code = c as u32;
            let printable =
                |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
            if code < 256 && printable(code) {
                return code as u8;
            }
            // The other 68 bytes, in order, were moved to 256, 257, …
            let moved = code.wrapping_sub(256);
            (0u32..256)
                .filter(|&b| !printable(b))
                .nth(moved as usize)
                .map_or(b'?', |b| b as u8)
        })
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
        assert_eq!(byte_level_bytes("Ġhello"), b" hello");
        assert_eq!(byte_level_bytes("Ċ"), b"\n");
        assert_eq!(byte_level_bytes("{\""), b"{\"");
        // 'é' in UTF-8 is C3 A9, spelled Ã© by GPT-2's table.
        assert_eq!(byte_level_bytes("Ã©"), "é".as_bytes());
    }

    #[test]
    fn sentencepiece_spaces_and_byte_tokens() {
        assert_eq!(sentencepiece_bytes("\u{2581}the"), b" the");
        assert_eq!(sentencepiece_bytes("<0x0A>"), b"\n");
        assert_eq!(sentencepiece_bytes("<0x0A0>"), b"<0x0A0>");
    }
}

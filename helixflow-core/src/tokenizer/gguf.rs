//! Building a Hugging Face `tokenizers` pipeline from GGUF tokenizer metadata, so that it splits
//! text exactly as llama.cpp does for the same file.
//!
//! Two vocabulary kinds are supported:
//! - `"gpt2"`: byte-level BPE from tokens + merges; the pre-tokenizer regexes follow llama.cpp's
//!   choice for `tokenizer.ggml.pre`.
//! - `"llama"`: SentencePiece-style BPE. GGUF stores scores instead of merges, so merges are
//!   derived the way Hugging Face's SentencePiece converter does (every split of a token into two
//!   vocabulary pieces, ranked by the merged token's score), with `<0xNN>` byte fallback and `▁`
//!   for spaces.

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{
    NormalizerWrapper, Prepend, Replace, Sequence as NormalizerSequence,
};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use super::vocab::GgufVocab;
use crate::error::{Error, Result};

/// SentencePiece's visible space.
const SPM_SPACE: &str = "\u{2581}";

/// llama.cpp's Llama-3 split regex (the tokenizer.json one with `(?i:...)` spelled out, so that
/// only ASCII letters fold case).
const LLAMA3_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's Qwen2 split regex: as Llama-3 but one digit per piece.
const QWEN2_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How a byte-level vocabulary splits text before BPE (llama.cpp's `llama_vocab_pre_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreTokenizerKind {
    /// GPT-2's regex (also the fallback for names we do not know).
    Gpt2,
    /// Every digit on its own, then GPT-2's regex (SmolLM, StarCoder, ...).
    DigitsThenGpt2,
    /// The Llama-3 regex; whole words that are tokens skip the merges.
    Llama3,
    /// The Qwen2 regex.
    Qwen2,
}

impl PreTokenizerKind {
    /// The kind llama.cpp uses for a `tokenizer.ggml.pre` name.
    fn from_name(pre: Option<&str>) -> Self {
        match pre.unwrap_or("default") {
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" => Self::DigitsThenGpt2,
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => Self::Llama3,
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" => Self::Qwen2,
            _ => Self::Gpt2,
        }
    }

    fn pre_tokenizer(self) -> Result<PreTokenizerWrapper> {
        let byte_level_with_regex = ByteLevel::new(false, true, true);
        let byte_level_only = ByteLevel::new(false, true, false);
        let split = |pattern: &str| {
            Split::new(
                SplitPattern::Regex(pattern.to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| Error::Tokenizer(format!("bad pre-tokenizer regex: {e}")))
        };
        Ok(match self {
            Self::Gpt2 => byte_level_with_regex.into(),
            Self::DigitsThenGpt2 => PreTokenizerSequence::new(vec![
                Digits::new(true).into(),
                byte_level_with_regex.into(),
            ])
            .into(),
            Self::Llama3 => PreTokenizerSequence::new(vec![
                split(LLAMA3_PATTERN)?.into(),
                byte_level_only.into(),
            ])
            .into(),
            Self::Qwen2 => PreTokenizerSequence::new(vec![
                split(QWEN2_PATTERN)?.into(),
                byte_level_only.into(),
            ])
            .into(),
        })
    }
}

/// Whether llama.cpp adds BOS by default for this vocabulary (used when the file does not say).
pub(super) fn default_add_bos(vocab: &GgufVocab) -> bool {
    vocab.model == "llama"
        || PreTokenizerKind::from_name(vocab.pre.as_deref()) == PreTokenizerKind::Llama3
}

/// Builds the `tokenizers` pipeline for `vocab` (special tokens registered, special-token
/// parsing on).
pub(super) fn build(vocab: &GgufVocab) -> Result<tokenizers::Tokenizer> {
    if vocab.tokens.is_empty() {
        return Err(Error::Tokenizer("the GGUF vocabulary has no tokens".into()));
    }
    let ids = token_ids(&vocab.tokens);
    let mut tokenizer = match vocab.model.as_str() {
        "gpt2" => build_byte_level(vocab, &ids)?,
        "llama" => build_sentencepiece(vocab, &ids)?,
        other => {
            return Err(Error::UnsupportedModel(format!(
                "GGUF tokenizer model {other:?} (supported: \"gpt2\", \"llama\")"
            )))
        }
    };
    tokenizer.add_special_tokens(&added_tokens(vocab, true));
    tokenizer.add_tokens(&added_tokens(vocab, false));
    Ok(tokenizer)
}

/// Token text → id; on duplicate texts the lowest id wins, as in llama.cpp's lookup.
fn token_ids(tokens: &[String]) -> Vocab {
    let mut ids = Vocab::with_capacity(tokens.len());
    for (id, token) in (0u32..).zip(tokens) {
        ids.entry(token.clone()).or_insert(id);
    }
    ids
}

/// Control/unknown tokens (`special`) or user-defined tokens (`!special`) as added tokens:
/// they are matched verbatim in raw text before any splitting.
fn added_tokens(vocab: &GgufVocab, special: bool) -> Vec<AddedToken> {
    vocab
        .tokens
        .iter()
        .enumerate()
        .filter(|(id, token)| {
            let wanted = if special {
                vocab.is_special(*id)
            } else {
                vocab.token_type(*id) == GgufVocab::TOKEN_TYPE_USER_DEFINED
            };
            wanted && !token.is_empty()
        })
        .map(|(_, token)| AddedToken::from(token.clone(), special).normalized(false))
        .collect()
}

fn build_byte_level(vocab: &GgufVocab, ids: &Vocab) -> Result<tokenizers::Tokenizer> {
    let mut merges = Vec::with_capacity(vocab.merges.len());
    let mut skipped = 0usize;
    for merge in &vocab.merges {
        let Some((left, right)) = merge.split_once(' ') else {
            return Err(Error::Tokenizer(format!(
                "GGUF merge {merge:?} is not two tokens separated by a space"
            )));
        };
        // A merge whose parts or result are not tokens can never fire; tokenizers would reject it.
        if ids.contains_key(left)
            && ids.contains_key(right)
            && ids.contains_key(&format!("{left}{right}"))
        {
            merges.push((left.to_owned(), right.to_owned()));
        } else {
            skipped += 1;
        }
    }
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "ignored GGUF merges that produce no vocabulary token"
        );
    }
    let kind = PreTokenizerKind::from_name(vocab.pre.as_deref());
    let model = BPE::builder()
        .vocab_and_merges(ids.clone(), merges)
        .ignore_merges(kind == PreTokenizerKind::Llama3)
        .build()
        .map_err(|e| Error::Tokenizer(format!("cannot build the BPE model: {e}")))?;
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(kind.pre_tokenizer()?));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    Ok(tokenizer)
}

fn build_sentencepiece(vocab: &GgufVocab, ids: &Vocab) -> Result<tokenizers::Tokenizer> {
    let merges = sentencepiece_merges(&vocab.tokens, &vocab.scores, ids);
    let mut builder = BPE::builder()
        .vocab_and_merges(ids.clone(), merges)
        .byte_fallback(true)
        .fuse_unk(true);
    let unknown = vocab
        .unknown_token_id
        .and_then(|id| vocab.tokens.get(id as usize))
        .or_else(|| vocab.tokens.iter().find(|t| *t == "<unk>"));
    if let Some(unknown) = unknown {
        builder = builder.unk_token(unknown.clone());
    }
    let model = builder
        .build()
        .map_err(|e| Error::Tokenizer(format!("cannot build the BPE model: {e}")))?;

    let bad_replace = |e| Error::Tokenizer(format!("cannot build the space replacement: {e}"));
    let add_space_prefix = vocab.add_space_prefix.unwrap_or(true);
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        normalizers.push(Prepend::new(SPM_SPACE.to_owned()).into());
    }
    normalizers.push(Replace::new(" ", SPM_SPACE).map_err(bad_replace)?.into());

    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new(SPM_SPACE, " ").map_err(bad_replace)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        // The prefix space added when encoding is not part of the text.
        decoders.push(Strip::new(' ', 1, 0).into());
    }

    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer.with_normalizer(Some(NormalizerSequence::new(normalizers)));
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}

/// BPE merges for a SentencePiece vocabulary, as Hugging Face's `SentencePieceExtractor` builds
/// them: for every token, each split into two tokens is a merge; merges rank by the merged
/// token's score (highest first; ties keep vocabulary order, then the pieces' ids). Without
/// scores, lower ids rank first.
fn sentencepiece_merges(tokens: &[String], scores: &[f32], ids: &Vocab) -> Vec<(String, String)> {
    let mut ranked: Vec<(f32, u32, u32, &str, &str)> = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        let score = if scores.is_empty() {
            -(id as f32)
        } else {
            scores.get(id).copied().unwrap_or(f32::NEG_INFINITY)
        };
        let mut local = Vec::new();
        for (split, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(split);
            if let (Some(&l), Some(&r)) = (ids.get(left), ids.get(right)) {
                local.push((score, l, r, left, right));
            }
        }
        local.sort_by_key(|&(_, l, r, _, _)| (l, r));
        ranked.extend(local);
    }
    // Stable: equal scores keep the order built above.
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked
        .into_iter()
        .map(|(_, _, _, l, r)| (l.to_owned(), r.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_tokenizer_names_follow_llama_cpp() {
        assert_eq!(
            PreTokenizerKind::from_name(Some("smollm")),
            PreTokenizerKind::DigitsThenGpt2
        );
        assert_eq!(
            PreTokenizerKind::from_name(Some("llama-bpe")),
            PreTokenizerKind::Llama3
        );
        assert_eq!(
            PreTokenizerKind::from_name(Some("qwen2")),
            PreTokenizerKind::Qwen2
        );
        assert_eq!(PreTokenizerKind::from_name(None), PreTokenizerKind::Gpt2);
        assert_eq!(
            PreTokenizerKind::from_name(Some("something-new")),
            PreTokenizerKind::Gpt2
        );
    }

    #[test]
    fn all_regexes_compile() {
        for kind in [
            PreTokenizerKind::Gpt2,
            PreTokenizerKind::DigitsThenGpt2,
            PreTokenizerKind::Llama3,
            PreTokenizerKind::Qwen2,
        ] {
            assert!(kind.pre_tokenizer().is_ok(), "{kind:?}");
        }
    }

    /// The pieces `kind` cuts `text` into, as slices of the original text.
    fn pieces(kind: PreTokenizerKind, text: &str) -> Vec<String> {
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
        let mut pretokenized = PreTokenizedString::from(text);
        kind.pre_tokenizer()
            .unwrap()
            .pre_tokenize(&mut pretokenized)
            .unwrap();
        pretokenized
            .get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(_, (start, end), _)| text[start..end].to_owned())
            .collect()
    }

    #[test]
    fn pre_tokenizers_split_like_llama_cpp_regexes() {
        // Expected pieces: Python's `regex.findall` with llama.cpp's patterns.
        let text = "I'M  here: 1234567 x\n\n  ¿Qué?\tdon't";
        assert_eq!(
            pieces(PreTokenizerKind::Llama3, text),
            [
                "I", "'M", " ", " here", ":", " ", "123", "456", "7", " x", "\n\n", " ", " ¿",
                "Qué", "?", "\tdon", "'t"
            ]
        );
        assert_eq!(
            pieces(PreTokenizerKind::Qwen2, text),
            [
                "I", "'M", " ", " here", ":", " ", "1", "2", "3", "4", "5", "6", "7", " x", "\n\n",
                " ", " ¿", "Qué", "?", "\tdon", "'t"
            ]
        );
        assert_eq!(
            pieces(PreTokenizerKind::Gpt2, text),
            [
                "I", "'", "M", " ", " here", ":", " 1234567", " x", "\n\n ", " ¿", "Qué", "?",
                "\t", "don", "'t"
            ]
        );
    }

    #[test]
    fn sentencepiece_merges_rank_by_merged_score() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // "bc" scores higher than "ab"; "abc" splits as a+bc and ab+c.
        let scores = [-1.0, -1.0, -1.0, -5.0, -2.0, -3.0];
        let merges = sentencepiece_merges(&tokens, &scores, &token_ids(&tokens));
        let merges: Vec<(&str, &str)> = merges
            .iter()
            .map(|(l, r)| (l.as_str(), r.as_str()))
            .collect();
        assert_eq!(
            merges,
            vec![("b", "c"), ("a", "bc"), ("ab", "c"), ("a", "b")]
        );
    }

    #[test]
    fn unknown_model_is_unsupported() {
        let vocab = GgufVocab {
            model: "t5".into(),
            tokens: vec!["a".into()],
            ..GgufVocab::default()
        };
        assert!(matches!(build(&vocab), Err(Error::UnsupportedModel(_))));
    }

    #[test]
    fn malformed_merge_is_an_error() {
        let vocab = GgufVocab {
            model: "gpt2".into(),
            tokens: vec!["a".into(), "b".into(), "ab".into()],
            merges: vec!["ab".into()],
            ..GgufVocab::default()
        };
        assert!(matches!(build(&vocab), Err(Error::Tokenizer(_))));
    }
}

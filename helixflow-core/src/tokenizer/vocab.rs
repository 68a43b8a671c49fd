//! The tokenizer description stored in a GGUF file's `tokenizer.ggml.*` metadata.

use serde::{Deserialize, Serialize};

/// A tokenizer as a GGUF file describes it: plain data, filled by the GGUF reader from the
/// metadata keys `tokenizer.ggml.*` and turned into a [`Tokenizer`](super::Tokenizer) by
/// [`Tokenizer::from_gguf_vocab`](super::Tokenizer::from_gguf_vocab).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: `"gpt2"` for byte-level BPE (merges), `"llama"` for
    /// SentencePiece-style BPE driven by token scores.
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer name llama.cpp uses to pick its splitting regexes
    /// (`"smollm"`, `"llama-bpe"`, `"gpt2"`, `"qwen2"`, `"default"`, ...).
    #[serde(default)]
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: the text of every token, indexed by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`: one of the `TOKEN_TYPE_*` constants per token (may be empty,
    /// meaning all normal).
    #[serde(default)]
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`: BPE merges as `"left right"` (empty for `"llama"` vocabularies).
    #[serde(default)]
    pub merges: Vec<String>,
    /// `tokenizer.ggml.scores`: one score per token; SentencePiece vocabularies merge the pair
    /// whose result scores highest first (may be empty).
    #[serde(default)]
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.bos_token_id`.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    #[serde(default)]
    pub unknown_token_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    #[serde(default)]
    pub padding_token_id: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`: the end-of-turn token, when the model names one.
    #[serde(default)]
    pub eot_token_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`: whether prompts start with BOS (absent: the model type's
    /// default).
    #[serde(default)]
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`: whether encoded text ends with EOS.
    #[serde(default)]
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`: whether SentencePiece text gets a leading space
    /// (absent: true for `"llama"`).
    #[serde(default)]
    pub add_space_prefix: Option<bool>,
}

impl GgufVocab {
    /// Token type of an ordinary token.
    pub const TOKEN_TYPE_NORMAL: i32 = 1;
    /// Token type of the unknown token (`<unk>`).
    pub const TOKEN_TYPE_UNKNOWN: i32 = 2;
    /// Token type of a control token (`<s>`, `<|im_start|>`, ...).
    pub const TOKEN_TYPE_CONTROL: i32 = 3;
    /// Token type of a user-defined token, matched verbatim in text.
    pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;
    /// Token type of an unused slot.
    pub const TOKEN_TYPE_UNUSED: i32 = 5;
    /// Token type of a raw byte token (`<0x0A>`).
    pub const TOKEN_TYPE_BYTE: i32 = 6;

    /// The type of token `id` (normal when the file gives no types).
    pub fn token_type(&self, id: usize) -> i32 {
        self.token_types
            .get(id)
            .copied()
            .unwrap_or(Self::TOKEN_TYPE_NORMAL)
    }

    /// Whether `id` is a control or unknown token: such tokens are only recognised in text when
    /// special-token parsing is on, and are left out of decoded text when skipping specials.
    pub fn is_special(&self, id: usize) -> bool {
        matches!(
            self.token_type(id),
            Self::TOKEN_TYPE_CONTROL | Self::TOKEN_TYPE_UNKNOWN
        )
    }
}

//! The `qwen3` architecture: Qwen2's blocks without the projection biases, with each head's
//! queries and keys RMS-normalised before the rotary embedding, and heads whose width comes
//! from `attention.key_length` (wider than hidden ÷ heads in several sizes).

use super::decoder::{Decoder, DecoderConfig};
use super::hparams::{standard_config, Hparams, StandardDefaults};
use super::rope::RopeStyle;
use crate::error::Result;
use crate::gguf::GgufFile;

/// The configuration a `qwen3` GGUF describes.
pub fn config(gguf: &GgufFile) -> Result<DecoderConfig> {
    attention_config(&Hparams::new(gguf, "qwen3"))
}

/// Qwen3's blocks as the file's keys under `hp`'s prefix describe them (`qwen3moe` adds its
/// experts to them).
pub(crate) fn attention_config(hp: &Hparams<'_>) -> Result<DecoderConfig> {
    let mut config = standard_config(
        hp,
        StandardDefaults {
            rope_style: RopeStyle::Neox,
            rope_base: 1_000_000.0,
            context_length: 40_960,
            norm_eps: 1e-6,
        },
    )?;
    config.qk_norm = true;
    Ok(config)
}

/// Loads a `qwen3` GGUF.
pub fn load(gguf: &GgufFile) -> Result<Decoder> {
    Decoder::load(gguf, config(gguf)?)
}

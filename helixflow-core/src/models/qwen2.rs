//! The `qwen2` architecture (Qwen2, Qwen2.5): llama's blocks with biases on the query, key
//! and value projections and rotary embedding in NeoX order.

use super::decoder::{Decoder, DecoderConfig};
use super::hparams::{standard_config, Hparams, StandardDefaults};
use super::rope::RopeStyle;
use crate::error::Result;
use crate::gguf::GgufFile;

/// The configuration a `qwen2` GGUF describes.
pub fn config(gguf: &GgufFile) -> Result<DecoderConfig> {
    let hp = Hparams::new(gguf, "qwen2");
    standard_config(
        &hp,
        StandardDefaults {
            rope_style: RopeStyle::Neox,
            rope_base: 1_000_000.0,
            context_length: 32_768,
            norm_eps: 1e-6,
        },
    )
}

/// Loads a `qwen2` GGUF. Its biases are required.
pub fn load(gguf: &GgufFile) -> Result<Decoder> {
    if !gguf.has_tensor("blk.0.attn_q.bias") {
        return Err(crate::Error::invalid_file(
            gguf.path(),
            "tensor `blk.0.attn_q.bias` is missing (qwen2 projections have biases)",
        ));
    }
    Decoder::load(gguf, config(gguf)?)
}

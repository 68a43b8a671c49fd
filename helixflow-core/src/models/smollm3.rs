//! The `smollm3` architecture (SmolLM3): Llama's blocks, except that every fourth layer
//! (the 4th, 8th, ...) has no rotary embedding at all ("NoPE"), as llama.cpp builds it.

use super::decoder::{Decoder, DecoderConfig};
use super::hparams::{standard_config, Hparams, StandardDefaults};
use super::rope::RopeStyle;
use crate::error::Result;
use crate::gguf::GgufFile;

/// Every this many layers, the last has no position embedding.
const NO_ROPE_LAYER_STEP: usize = 4;

/// The configuration a `smollm3` GGUF describes.
pub fn config(gguf: &GgufFile) -> Result<DecoderConfig> {
    let hp = Hparams::new(gguf, "smollm3");
    let mut config = standard_config(
        &hp,
        StandardDefaults {
            rope_style: RopeStyle::Normal,
            rope_base: 10_000.0,
            context_length: 65_536,
            norm_eps: 1e-6,
        },
    )?;
    for (l, layer) in config.layers.iter_mut().enumerate() {
        layer.rotary = (l + 1) % NO_ROPE_LAYER_STEP != 0;
    }
    Ok(config)
}

/// Loads a `smollm3` GGUF.
pub fn load(gguf: &GgufFile) -> Result<Decoder> {
    Decoder::load(gguf, config(gguf)?)
}

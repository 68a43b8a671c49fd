//! The `smollm3` architecture (SmolLM3): Llama's blocks, except that every fourth layer
//! (the 4th, 8th, ...) has no rotary embedding at all ("NoPE"), as llama.cpp builds it.

use super::decoder::{Decoder, DecoderConfig};
use super::hf::{HfConfig, HfMetadata};
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

/// A `smollm3` folder: llama.cpp drops the rotary embedding of every fourth layer, so a
/// folder whose `no_rope_layers` (1: rotary, 0: none) says otherwise is refused.
pub fn hf_metadata(config: &HfConfig, _meta: &mut HfMetadata) -> Result<()> {
    let Some(flags) = config.value("no_rope_layers").and_then(|v| v.as_array()) else {
        return Ok(());
    };
    let llama_cpp = (0..flags.len()).map(|l| u64::from((l + 1) % NO_ROPE_LAYER_STEP != 0));
    if !flags.iter().map(|f| f.as_u64()).eq(llama_cpp.map(Some)) {
        return Err(crate::error::Error::UnsupportedModel(format!(
            "a smollm3 model whose layers without rotary embedding are not every \
             {NO_ROPE_LAYER_STEP}th ({flags:?})"
        )));
    }
    Ok(())
}

//! The `llama` architecture: Llama 2, 3 and 3.x (with llama 3's frequency factors), TinyLlama,
//! SmolLM, Mistral and the many others that declare it. Plain pre-norm blocks with RMSNorm,
//! adjacent-pair rotary embedding, SwiGLU, and biases where the file has them.

use super::decoder::{Decoder, DecoderConfig};
use super::hparams::{standard_config, Hparams, StandardDefaults};
use super::rope::RopeStyle;
use crate::error::Result;
use crate::gguf::GgufFile;

/// The configuration a `llama` GGUF describes.
pub fn config(gguf: &GgufFile) -> Result<DecoderConfig> {
    let hp = Hparams::new(gguf, "llama");
    standard_config(
        &hp,
        StandardDefaults {
            rope_style: RopeStyle::Normal,
            rope_base: 10_000.0,
            context_length: 2048,
            norm_eps: 1e-5,
        },
    )
}

/// Loads a `llama` GGUF.
pub fn load(gguf: &GgufFile) -> Result<Decoder> {
    Decoder::load(gguf, config(gguf)?)
}

//! The `phi3` architecture (Phi-3 and Phi-3.5 mini and medium, Phi-4 mini).
//!
//! As llama.cpp builds it: Llama's blocks with the query, key and value projections fused in
//! one `attn_qkv` matrix and the gate and up projections in one `ffn_up` (gate first); NeoX
//! rotary embedding; queries scaled by `1/√head_dim` before attention. Models with LongRoPE
//! carry two sets of per-pair frequency factors: the long ones serve a context longer than
//! `rope.scaling.original_context_length` (HelixFlow serves the whole trained context, as
//! llama.cpp does by default), the short ones otherwise; `rope.scaling.attn_factor` scales
//! every cosine and sine. The sliding window some files declare is ignored, as llama.cpp
//! ignores it.

use super::decoder::{Decoder, DecoderConfig};
use super::hparams::{standard_config, Hparams, StandardDefaults};
use super::rope::{RopeScaling, RopeStyle};
use crate::error::Result;
use crate::gguf::GgufFile;

/// The configuration a `phi3` GGUF describes.
pub fn config(gguf: &GgufFile) -> Result<DecoderConfig> {
    let hp = Hparams::new(gguf, "phi3");
    let mut config = standard_config(
        &hp,
        StandardDefaults {
            rope_style: RopeStyle::Neox,
            rope_base: 10_000.0,
            context_length: 4096,
            norm_eps: 1e-5,
        },
    )?;
    let original = hp.usize_or(
        "rope.scaling.original_context_length",
        config.context_length,
    )?;
    if gguf.has_tensor("rope_factors_long.weight") {
        config.rope_factors_tensor = if config.context_length > original {
            "rope_factors_long.weight"
        } else {
            "rope_factors_short.weight"
        };
    }
    let attn_factor = hp.f32_or("rope.scaling.attn_factor", 1.0)?;
    if attn_factor != 1.0 {
        for layer in &mut config.layers {
            if layer.rope_scaling == RopeScaling::None {
                layer.rope_scaling = RopeScaling::Scaled { attn_factor };
            }
        }
    }
    config.query_scale = Some(1.0 / (config.head_dim as f32).sqrt());
    Ok(config)
}

/// Loads a `phi3` GGUF.
pub fn load(gguf: &GgufFile) -> Result<Decoder> {
    Decoder::load(gguf, config(gguf)?)
}

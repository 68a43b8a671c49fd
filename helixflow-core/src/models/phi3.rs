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
use super::hf::{HfConfig, HfMetadata};
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

/// A `phi3` folder's LongRoPE: both sets of factors as tensors, the original context and the
/// attention factor the converter derives from the stretch.
pub fn hf_metadata(config: &HfConfig, meta: &mut HfMetadata) -> Result<()> {
    let Some(scaling) = config.value("rope_scaling") else {
        return Ok(());
    };
    let kind = scaling.get("type").or_else(|| scaling.get("rope_type"));
    if kind.and_then(|k| k.as_str()) != Some("longrope") {
        return Ok(());
    }
    let factors = |key: &str| -> Result<Vec<f32>> {
        scaling
            .get(key)
            .and_then(|v| v.as_array())
            .and_then(|a| a.iter().map(|f| f.as_f64().map(|f| f as f32)).collect())
            .ok_or_else(|| config.invalid(format!("rope_scaling.{key} is not a list of numbers")))
    };
    meta.add_tensor("rope_factors_long.weight", factors("long_factor")?);
    meta.add_tensor("rope_factors_short.weight", factors("short_factor")?);
    let context = config.usize("max_position_embeddings")?;
    let original = config.usize("original_max_position_embeddings")?;
    meta.set_usize("rope.scaling.original_context_length", original);
    let stretch = context as f64 / original as f64;
    let attn_factor = match scaling.get("attention_factor").and_then(|f| f.as_f64()) {
        Some(f) => f,
        None if stretch > 1.0 => (1.0 + stretch.ln() / (original as f64).ln()).sqrt(),
        None => 1.0,
    };
    meta.set_f64("rope.scaling.attn_factor", attn_factor);
    Ok(())
}

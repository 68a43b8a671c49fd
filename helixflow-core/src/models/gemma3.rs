//! The `gemma3` architecture (Gemma 3 text models, 270M to 27B).
//!
//! As llama.cpp builds it: embeddings scaled by `√hidden`; RMSNorm (its `1 + w` is in the
//! GGUF weights); per-head query and key norms; NeoX rotary embedding; queries scaled by
//! `1/√head_dim` (by `1/√(hidden/heads)` in the 27B model) before attention, whose scores are
//! then not scaled again; the attention and MLP outputs normalised again before each residual
//! add; GeGLU with ggml's f16 GELU table. Five of every six layers (or those the file's
//! `attention.sliding_window_pattern` names) attend within a sliding window with rotary base
//! 10 000 (or `rope.freq_base_swa`); the others attend to the whole context with the file's
//! base and scaling.

use super::decoder::{Decoder, DecoderConfig, LayerAttention};
use super::hf::{HfConfig, HfMetadata};
use super::hparams::{apply_sliding_window, standard_config, Hparams, StandardDefaults};
use super::rope::{RopeScaling, RopeStyle};
use crate::error::Result;
use crate::gguf::GgufFile;
use crate::gguf::MetadataValue;

/// Layers per repetition of the attention pattern where the file does not say: all but the
/// last slide.
const SLIDING_PERIOD: usize = 6;

/// Rotary base of the sliding-window layers where the file does not say.
const SLIDING_ROPE_BASE: f32 = 10_000.0;

/// The configuration a `gemma3` GGUF describes.
pub fn config(gguf: &GgufFile) -> Result<DecoderConfig> {
    let hp = Hparams::new(gguf, "gemma3");
    let mut config = standard_config(
        &hp,
        StandardDefaults {
            rope_style: RopeStyle::Neox,
            rope_base: 1_000_000.0,
            context_length: 131_072,
            norm_eps: 1e-6,
        },
    )?;
    // Without a window (or with 0) every layer attends to the whole context, as in llama.cpp.
    let sliding_attention = LayerAttention {
        rope_base: hp.f32_or("rope.freq_base_swa", SLIDING_ROPE_BASE)?,
        rope_scaling: RopeScaling::None,
        ..config.layers[0]
    };
    apply_sliding_window(&hp, &mut config, 0, SLIDING_PERIOD, sliding_attention)?;
    super::gemma2::gemma_blocks(&mut config, 62);
    config.final_logit_softcap = hp
        .f32_opt("final_logit_softcapping")?
        .filter(|&cap| cap > 0.0);
    config.qk_norm = true;
    Ok(config)
}

/// Loads a `gemma3` GGUF.
pub fn load(gguf: &GgufFile) -> Result<Decoder> {
    Decoder::load(gguf, config(gguf)?)
}

/// A `gemma3_text` folder's window, its layers (`layer_types`, or a period), the sliding
/// layers' rotary base and the final soft cap.
pub fn hf_metadata(config: &HfConfig, meta: &mut HfMetadata) -> Result<()> {
    meta.copy_usize(config, "sliding_window", "attention.sliding_window")?;
    meta.copy_f64(config, "rope_local_base_freq", "rope.freq_base_swa")?;
    meta.copy_f64(config, "final_logit_softcapping", "final_logit_softcapping")?;
    let pattern = "attention.sliding_window_pattern";
    if let Some(types) = config.value("layer_types").and_then(|v| v.as_array()) {
        let flags = types
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(MetadataValue::Bool(true)),
                Some("full_attention") => Ok(MetadataValue::Bool(false)),
                _ => Err(config.invalid(format!("layer type {t} is not one HelixFlow knows"))),
            })
            .collect::<Result<Vec<_>>>()?;
        meta.set(pattern, MetadataValue::Array(flags));
    } else {
        meta.copy_usize(config, "sliding_window_pattern", pattern)?;
    }
    Ok(())
}

//! The `gemma2` architecture (Gemma 2, 2B to 27B).
//!
//! As llama.cpp builds it: Gemma 3's blocks without the query and key norms, and with two
//! soft caps, `cap · tanh(x / cap)`, on the attention scores (default 50) and on the final
//! logits (default 30). Every other layer, starting with the first, attends within a sliding
//! window (4096 by default) with the same rotary embedding as the others.

use helixflow_kernels::math::GateActivation;

use super::decoder::{Decoder, DecoderConfig, LayerAttention};
use super::hf::{HfConfig, HfMetadata};
use super::hparams::{apply_sliding_window, standard_config, Hparams, StandardDefaults};
use super::rope::RopeStyle;
use crate::error::Result;
use crate::gguf::GgufFile;

/// Layers per repetition of the attention pattern where the file does not say.
const SLIDING_PERIOD: usize = 2;

/// The configuration a `gemma2` GGUF describes.
pub fn config(gguf: &GgufFile) -> Result<DecoderConfig> {
    let hp = Hparams::new(gguf, "gemma2");
    let mut config = standard_config(
        &hp,
        StandardDefaults {
            rope_style: RopeStyle::Neox,
            rope_base: 10_000.0,
            context_length: 8192,
            norm_eps: 1e-6,
        },
    )?;
    let sliding_attention = LayerAttention {
        rope_base: hp.f32_or("rope.freq_base_swa", config.layers[0].rope_base)?,
        ..config.layers[0]
    };
    apply_sliding_window(&hp, &mut config, 4096, SLIDING_PERIOD, sliding_attention)?;
    gemma_blocks(&mut config, 46);
    config.attention_softcap = Some(positive(&hp, "attn_logit_softcapping", 50.0)?);
    config.final_logit_softcap = Some(positive(&hp, "final_logit_softcapping", 30.0)?);
    Ok(config)
}

/// What Gemma 2 and 3 share: embeddings scaled by `√hidden`, queries by `1/√head_dim` before
/// attention (`1/√(hidden/heads)` in the 27B model, of `layers_of_27b` layers), GeGLU, and
/// the attention and MLP outputs normalised again before each residual add.
pub(crate) fn gemma_blocks(config: &mut DecoderConfig, layers_of_27b: usize) {
    let query_width = if config.num_layers == layers_of_27b {
        config.hidden_size / config.num_heads
    } else {
        config.head_dim
    };
    config.query_scale = Some(1.0 / (query_width as f32).sqrt());
    config.embedding_scale = Some((config.hidden_size as f32).sqrt());
    config.activation = GateActivation::GeluTanh;
    config.post_norms = true;
}

/// A soft cap, which must be a positive number.
fn positive(hp: &Hparams<'_>, key: &str, default: f32) -> Result<f32> {
    let cap = hp.f32_or(key, default)?;
    if !(cap.is_finite() && cap > 0.0) {
        return Err(hp.invalid(format!("{key} is {cap}, not a positive cap")));
    }
    Ok(cap)
}

/// Loads a `gemma2` GGUF.
pub fn load(gguf: &GgufFile) -> Result<Decoder> {
    Decoder::load(gguf, config(gguf)?)
}

/// A `gemma2` folder's window and soft caps.
pub fn hf_metadata(config: &HfConfig, meta: &mut HfMetadata) -> Result<()> {
    meta.copy_usize(config, "sliding_window", "attention.sliding_window")?;
    meta.copy_f64(config, "attn_logit_softcapping", "attn_logit_softcapping")?;
    meta.copy_f64(config, "final_logit_softcapping", "final_logit_softcapping")
}

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

use helixflow_kernels::math::GateActivation;

use super::decoder::{Decoder, DecoderConfig, LayerAttention};
use super::hparams::{
    apply_sliding_window, sliding_layers, standard_config, Hparams, StandardDefaults,
};
use super::rope::{RopeScaling, RopeStyle};
use crate::error::Result;
use crate::gguf::GgufFile;

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
    let window = hp.usize_or("attention.sliding_window", 0)?;
    if window > 0 {
        let sliding = sliding_layers(&hp, config.num_layers, SLIDING_PERIOD)?;
        let sliding_attention = LayerAttention {
            rope_base: hp.f32_or("rope.freq_base_swa", SLIDING_ROPE_BASE)?,
            rope_scaling: RopeScaling::None,
            sliding_window: Some(window),
            rotary: true,
        };
        apply_sliding_window(&mut config, &sliding, window, sliding_attention);
    }
    let query_width = if config.num_layers == 62 {
        // The 27B model scales by the width hidden ÷ heads, not its heads' width.
        config.hidden_size / config.num_heads
    } else {
        config.head_dim
    };
    config.query_scale = Some(1.0 / (query_width as f32).sqrt());
    config.embedding_scale = Some((config.hidden_size as f32).sqrt());
    config.final_logit_softcap = hp
        .f32_opt("final_logit_softcapping")?
        .filter(|&cap| cap > 0.0);
    config.activation = GateActivation::GeluTanh;
    config.qk_norm = true;
    config.post_norms = true;
    Ok(config)
}

/// Loads a `gemma3` GGUF.
pub fn load(gguf: &GgufFile) -> Result<Decoder> {
    Decoder::load(gguf, config(gguf)?)
}

//! The `qwen3moe` architecture (Qwen3 mixture-of-experts models, such as 30B-A3B): Qwen3's
//! attention (per-head query and key norms, NeoX rotary embedding) with a mixture of experts
//! in every block: softmax routing to the top `expert_used_count` of `expert_count` SwiGLU
//! experts, their weights renormalised to sum to one, as llama.cpp builds it.

use super::decoder::{Decoder, DecoderConfig};
use super::feed_forward::ExpertRouting;
use super::hf::{HfConfig, HfMetadata};
use super::hparams::Hparams;
use crate::error::Result;
use crate::gguf::GgufFile;

/// The configuration a `qwen3moe` GGUF describes.
pub fn config(gguf: &GgufFile) -> Result<DecoderConfig> {
    let hp = Hparams::new(gguf, "qwen3moe");
    let mut config = super::qwen3::attention_config(&hp)?;
    let count = hp.usize("expert_count")?;
    let used = hp.usize("expert_used_count")?;
    if count == 0 || used == 0 || used > count {
        return Err(hp.invalid(format!(
            "expert_used_count {used} of expert_count {count} experts"
        )));
    }
    let feed_forward_length = match hp.usize_or("expert_feed_forward_length", 0)? {
        0 => config.intermediate_size / used,
        width => width,
    };
    let scale = hp.f32_or("expert_weights_scale", 0.0)?;
    config.experts = Some(ExpertRouting {
        count,
        used,
        feed_forward_length,
        normalize_weights: true,
        weights_scale: (scale != 0.0 && scale != 1.0).then_some(scale),
    });
    Ok(config)
}

/// Loads a `qwen3moe` GGUF.
pub fn load(gguf: &GgufFile) -> Result<Decoder> {
    Decoder::load(gguf, config(gguf)?)
}

/// A `qwen3_moe` folder's expert settings. llama.cpp always renormalises the chosen experts'
/// weights, so a model that does not is refused.
pub fn hf_metadata(config: &HfConfig, meta: &mut HfMetadata) -> Result<()> {
    meta.set_usize("expert_count", config.usize("num_experts")?);
    meta.set_usize("expert_used_count", config.usize("num_experts_per_tok")?);
    meta.copy_usize(
        config,
        "moe_intermediate_size",
        "expert_feed_forward_length",
    )?;
    if config.bool_opt("norm_topk_prob")? == Some(false) {
        return Err(crate::error::Error::UnsupportedModel(
            "a qwen3_moe model whose expert weights are not renormalised (norm_topk_prob false)"
                .into(),
        ));
    }
    Ok(())
}

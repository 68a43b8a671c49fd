//! From a GGUF's `general.architecture` to the family that loads it.

use super::hf::{no_metadata, HfConversion};
use super::{CausalLm, Decoder};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// One architecture HelixFlow loads.
pub(crate) struct Architecture {
    /// Its GGUF `general.architecture`.
    pub name: &'static str,
    load: fn(&GgufFile) -> Result<Decoder>,
    /// How a Hugging Face folder of the family converts to its GGUF.
    pub hf: HfConversion,
}

/// A family whose folders need no more than renaming (and, if `permute_qk`, the query and key
/// rows reordered).
const fn plain(model_types: &'static [&'static str], permute_qk: bool) -> HfConversion {
    HfConversion {
        model_types,
        permute_qk,
        norm_shift: false,
        post_norms: false,
        metadata: no_metadata,
    }
}

/// Gemma's: norms stored as `1 + w`, norms after attention and the MLP.
const fn gemma(
    model_types: &'static [&'static str],
    metadata: fn(&super::hf::HfConfig, &mut super::hf::HfMetadata) -> Result<()>,
) -> HfConversion {
    HfConversion {
        model_types,
        permute_qk: false,
        norm_shift: true,
        post_norms: true,
        metadata,
    }
}

/// Every architecture, in the order `models list` and errors name them.
const ARCHITECTURES: &[Architecture] = &[
    Architecture {
        name: "llama",
        load: super::llama::load,
        hf: plain(&["llama", "mistral"], true),
    },
    Architecture {
        name: "qwen2",
        load: super::qwen2::load,
        hf: plain(&["qwen2"], false),
    },
    Architecture {
        name: "qwen3",
        load: super::qwen3::load,
        hf: plain(&["qwen3"], false),
    },
    Architecture {
        name: "qwen3moe",
        load: super::qwen3moe::load,
        hf: HfConversion {
            metadata: super::qwen3moe::hf_metadata,
            ..plain(&["qwen3_moe"], false)
        },
    },
    Architecture {
        name: "gemma2",
        load: super::gemma2::load,
        hf: gemma(&["gemma2"], super::gemma2::hf_metadata),
    },
    Architecture {
        name: "gemma3",
        load: super::gemma3::load,
        hf: gemma(&["gemma3_text", "gemma3"], super::gemma3::hf_metadata),
    },
    Architecture {
        name: "phi3",
        load: super::phi3::load,
        hf: HfConversion {
            metadata: super::phi3::hf_metadata,
            ..plain(&["phi3"], false)
        },
    },
    Architecture {
        name: "smollm3",
        load: super::smollm3::load,
        hf: HfConversion {
            metadata: super::smollm3::hf_metadata,
            ..plain(&["smollm3"], true)
        },
    },
];

/// The names of the architectures HelixFlow loads.
pub fn architectures() -> impl Iterator<Item = &'static str> {
    ARCHITECTURES.iter().map(|a| a.name)
}

/// The architecture whose Hugging Face `model_type` is `model_type`.
pub(crate) fn for_model_type(model_type: &str) -> Option<&'static Architecture> {
    ARCHITECTURES
        .iter()
        .find(|a| a.hf.model_types.contains(&model_type))
}

/// The Hugging Face `model_type`s HelixFlow loads.
pub fn model_types() -> impl Iterator<Item = &'static str> {
    ARCHITECTURES
        .iter()
        .flat_map(|a| a.hf.model_types.iter().copied())
}

/// Loads a decoder GGUF of any supported architecture.
pub fn load_gguf(gguf: &GgufFile) -> Result<Box<dyn CausalLm>> {
    let arch = gguf.get_str("general.architecture")?;
    match ARCHITECTURES.iter().find(|a| a.name == arch) {
        Some(architecture) => Ok(Box::new((architecture.load)(gguf)?)),
        None => Err(Error::UnsupportedModel(format!(
            "{}: architecture `{arch}` (supported: {})",
            gguf.path().display(),
            architectures().collect::<Vec<_>>().join(", ")
        ))),
    }
}

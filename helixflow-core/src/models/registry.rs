//! From a GGUF's `general.architecture` to the family that loads it.

use super::{CausalLm, Decoder};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// One architecture HelixFlow loads.
struct Architecture {
    /// Its GGUF `general.architecture`.
    name: &'static str,
    load: fn(&GgufFile) -> Result<Decoder>,
}

/// Every architecture, in the order `models list` and errors name them.
const ARCHITECTURES: &[Architecture] = &[
    Architecture {
        name: "llama",
        load: super::llama::load,
    },
    Architecture {
        name: "qwen2",
        load: super::qwen2::load,
    },
    Architecture {
        name: "qwen3",
        load: super::qwen3::load,
    },
    Architecture {
        name: "qwen3moe",
        load: super::qwen3moe::load,
    },
    Architecture {
        name: "gemma2",
        load: super::gemma2::load,
    },
    Architecture {
        name: "gemma3",
        load: super::gemma3::load,
    },
    Architecture {
        name: "phi3",
        load: super::phi3::load,
    },
    Architecture {
        name: "smollm3",
        load: super::smollm3::load,
    },
];

/// The names of the architectures HelixFlow loads.
pub fn architectures() -> impl Iterator<Item = &'static str> {
    ARCHITECTURES.iter().map(|a| a.name)
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

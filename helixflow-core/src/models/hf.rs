//! Hugging Face chat model folders: `config.json`, the weights in `model.safetensors` or in the
//! shards `model.safetensors.index.json` names (F32, F16 or BF16), and the tokenizer files
//! (read by [`crate::chat_model::ChatModel`]).
//!
//! A folder becomes a [`GgufFile`] in memory in llama.cpp's terms, as its converter
//! (`convert_hf_to_gguf.py`) would write it: the metadata keys the families read, GGUF tensor
//! names, the query and key rows of the families whose rotary embedding turns neighbouring
//! pairs reordered, Gemma's norm weights stored as `1 + w`, and each block's experts stacked.
//! The families then load it as any GGUF, so that a folder and the GGUF converted from it give
//! the same bits. Matrices stay in f32, or are quantised at load to a packed format
//! ([`LoadQuantization`]) with ggml's reference rounding, so that the fast kernels serve them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, MetadataValue, TensorInfo};

/// A packed format the matrices of a safetensors model are quantised to at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadQuantization {
    /// 8-bit blocks of 32 (`Q8_0`).
    Q8_0,
    /// 4-bit blocks of 32 (`Q4_0`).
    Q4_0,
}

impl FromStr for LoadQuantization {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "q8_0" => Ok(Self::Q8_0),
            "q4_0" => Ok(Self::Q4_0),
            other => Err(Error::InvalidRequest(format!(
                "unknown quantisation `{other}` (supported: q8_0, q4_0)"
            ))),
        }
    }
}

impl LoadQuantization {
    fn dtype(self) -> GgmlDType {
        match self {
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4_0 => GgmlDType::Q4_0,
        }
    }
}

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
    values: HashMap<String, MetadataValue>,
    /// Extra f32 tensors the conversion computes (rotary frequency factors).
    extra_tensors: Vec<(String, Vec<f32>)>,
}

impl HfMetadata {
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

/// How a family's folder differs from its GGUF beyond the names.
#[derive(Debug, Clone, Copy)]
pub struct HfConversion {
    /// `model_type` values of the family.
    pub model_types: &'static [&'static str],
    /// Whether the query and key rows are reordered from Hugging Face's halves to
    /// neighbouring pairs (families whose GGUF rotary embedding turns neighbours).
    pub permute_qk: bool,
    /// Whether norm weights are stored as `1 + w` (Gemma).
    pub norm_shift: bool,
    /// Whether the family's post-attention norm is its own (`post_attention_norm`, Gemma) and
    /// the MLP's comes from `pre_feedforward_layernorm`, rather than being the MLP's norm.
    pub post_norms: bool,
    /// The family's own metadata beyond [`standard_metadata`].
    pub metadata: fn(&HfConfig, &mut HfMetadata) -> Result<()>,
}

/// No metadata beyond the standard keys.
pub fn no_metadata(_: &HfConfig, _: &mut HfMetadata) -> Result<()> {
    Ok(())
}

/// Whether `path` is a Hugging Face model folder.
pub fn is_hf_folder(path: &Path) -> bool {
    path.join("config.json").is_file()
}

/// Converts the chat model folder `dir` into a GGUF in memory, its matrices quantised to
/// `quantize` if given.
pub fn import(dir: &Path, quantize: Option<LoadQuantization>) -> Result<GgufFile> {
    let config = HfConfig::read(dir)?;
    let model_type = config.model_type()?;
    let arch = super::registry::for_model_type(model_type).ok_or_else(|| {
        Error::UnsupportedModel(format!(
            "{}: model_type `{model_type}` (supported: {})",
            dir.display(),
            super::registry::model_types()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let conversion = arch.hf;
    let mut meta = HfMetadata {
        arch: arch.name,
        values: HashMap::new(),
        extra_tensors: Vec::new(),
    };
    meta.values.insert(
        "general.architecture".into(),
        MetadataValue::String(arch.name.into()),
    );
    standard_metadata(&config, &mut meta)?;
    (conversion.metadata)(&config, &mut meta)?;

    let weights = open_weights(dir)?;
    let mut writer = TensorWriter {
        dir,
        quantize,
        data: Vec::new(),
        tensors: HashMap::new(),
    };
    let heads = config.usize("num_attention_heads")?;
    let kv_heads = config.usize_opt("num_key_value_heads")?.unwrap_or(heads);
    let mut experts: HashMap<String, Vec<(usize, Tensor)>> = HashMap::new();
    let mut names: Vec<String> = weights.tensors().into_iter().map(|(n, _)| n).collect();
    names.sort();
    for hf_name in &names {
        let Some(target) = gguf_name(hf_name, &conversion) else {
            continue;
        };
        let tensor = weights
            .load(hf_name, &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| Error::invalid_file(dir, format!("tensor `{hf_name}`: {e}")))?;
        match target {
            Target::Unknown => {
                return Err(Error::UnsupportedModel(format!(
                    "{}: tensor `{hf_name}` has no place in a `{}` model",
                    dir.display(),
                    arch.name
                )))
            }
            Target::Expert { name, index } => {
                experts.entry(name).or_default().push((index, tensor))
            }
            Target::Tensor(name) => {
                let mut values = to_vec(dir, hf_name, &tensor)?;
                let dims = tensor.dims().to_vec();
                if conversion.permute_qk && name.contains(".attn_q.") {
                    values = permute_pairs(dir, hf_name, values, &dims, heads)?;
                } else if conversion.permute_qk && name.contains(".attn_k.") {
                    values = permute_pairs(dir, hf_name, values, &dims, kv_heads)?;
                }
                if conversion.norm_shift && name.ends_with("norm.weight") {
                    values.iter_mut().for_each(|v| *v += 1.0);
                }
                writer.add(&name, dims, values)?;
            }
        }
    }
    for (name, mut parts) in experts {
        parts.sort_by_key(|(index, _)| *index);
        if parts.iter().enumerate().any(|(i, (index, _))| i != *index) {
            return Err(Error::invalid_file(
                dir,
                format!(
                    "the experts of `{name}` are not numbered 0..{}",
                    parts.len()
                ),
            ));
        }
        let tensors: Vec<Tensor> = parts.into_iter().map(|(_, t)| t).collect();
        let stacked = Tensor::stack(&tensors, 0)
            .map_err(|e| Error::invalid_file(dir, format!("experts of `{name}`: {e}")))?;
        let values = to_vec(dir, &name, &stacked)?;
        writer.add(&name, stacked.dims().to_vec(), values)?;
    }
    for (name, values) in std::mem::take(&mut meta.extra_tensors) {
        let len = values.len();
        writer.add(&name, vec![len], values)?;
    }
    GgufFile::from_parts(dir, meta.values, writer.tensors, writer.data)
}

/// The keys every family shares, from their usual `config.json` names.
fn standard_metadata(c: &HfConfig, m: &mut HfMetadata) -> Result<()> {
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

/// The safetensors files of a folder: the shards of `model.safetensors.index.json`, else
/// `model.safetensors`.
fn open_weights(dir: &Path) -> Result<MmapedSafetensors> {
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let json: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
            what: index.display().to_string(),
            source,
        })?;
        let map = json
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::invalid_file(&index, "no `weight_map`"))?;
        let mut shards: Vec<&str> = map.values().filter_map(Value::as_str).collect();
        shards.sort_unstable();
        shards.dedup();
        if let Some(bad) = shards.iter().find(|s| s.contains('/') || s.contains('\\')) {
            return Err(Error::invalid_file(
                &index,
                format!("shard `{bad}` is not a file name"),
            ));
        }
        shards.into_iter().map(|s| dir.join(s)).collect()
    } else {
        vec![dir.join("model.safetensors")]
    };
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(Error::ModelNotFound(format!(
            "{} has no weights file {}",
            dir.display(),
            missing.display()
        )));
    }
    // SAFETY: read-only maps of the model's files, as for GGUF (see `GgufFile::open`).
    unsafe { MmapedSafetensors::multi(&files) }
        .map_err(|e| Error::invalid_file(dir, format!("cannot read the safetensors: {e}")))
}

/// Where a Hugging Face tensor goes.
enum Target {
    Tensor(String),
    /// Expert `index` of the stacked tensor `name`.
    Expert {
        name: String,
        index: usize,
    },
    /// Nowhere this family knows: the folder is refused.
    Unknown,
}

/// The GGUF name of a Hugging Face tensor, `None` for tensors the model does not use (rotary
/// caches, a multimodal model's vision tower).
fn gguf_name(hf: &str, conversion: &HfConversion) -> Option<Target> {
    let rest = ["model.language_model.", "language_model.model.", "model."]
        .iter()
        .find_map(|p| hf.strip_prefix(p))
        .unwrap_or(hf);
    let top = match rest {
        "embed_tokens.weight" => Some("token_embd.weight"),
        "norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" | "language_model.lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(name) = top {
        return Some(Target::Tensor(name.into()));
    }
    if [
        "vision_tower.",
        "multi_modal_projector.",
        "model.vision_tower.",
        "model.multi_modal_projector.",
    ]
    .iter()
    .any(|p| hf.starts_with(p))
    {
        return None;
    }
    let Some((layer, part)) = rest.strip_prefix("layers.").and_then(|r| r.split_once('.')) else {
        return Some(Target::Unknown);
    };
    let Ok(layer) = layer.parse::<usize>() else {
        return Some(Target::Unknown);
    };
    if let Some(expert) = part.strip_prefix("mlp.experts.") {
        let Some((index, proj)) = expert.split_once('.') else {
            return Some(Target::Unknown);
        };
        let name = match proj {
            "gate_proj.weight" => "ffn_gate_exps.weight",
            "up_proj.weight" => "ffn_up_exps.weight",
            "down_proj.weight" => "ffn_down_exps.weight",
            _ => return Some(Target::Unknown),
        };
        let Ok(index) = index.parse() else {
            return Some(Target::Unknown);
        };
        return Some(Target::Expert {
            name: format!("blk.{layer}.{name}"),
            index,
        });
    }
    let Some((module, kind)) = part.rsplit_once('.') else {
        return Some(Target::Unknown);
    };
    let name = match module {
        "self_attn.rotary_emb" => return None,
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.qkv_proj" => "attn_qkv",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "post_attention_layernorm" if conversion.post_norms => "post_attention_norm",
        "post_attention_layernorm" | "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" | "mlp.gate_up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "mlp.gate" => "ffn_gate_inp",
        _ => return Some(Target::Unknown),
    };
    Some(Target::Tensor(format!("blk.{layer}.{name}.{kind}")))
}

/// A tensor's values in f32.
fn to_vec(dir: &Path, name: &str, tensor: &Tensor) -> Result<Vec<f32>> {
    tensor
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| Error::invalid_file(dir, format!("tensor `{name}`: {e}")))
}

/// Reorders each head's rows (of a matrix, or values of a bias) from Hugging Face's two
/// halves to llama.cpp's neighbouring pairs: row `i` of a head's first half goes to `2i`, of
/// its second half to `2i + 1`.
fn permute_pairs(
    dir: &Path,
    name: &str,
    values: Vec<f32>,
    dims: &[usize],
    heads: usize,
) -> Result<Vec<f32>> {
    let rows = dims.first().copied().unwrap_or(0);
    let cols = values.len().checked_div(rows).unwrap_or(0);
    if heads == 0 || rows % (2 * heads) != 0 || cols * rows != values.len() {
        return Err(Error::invalid_file(
            dir,
            format!("`{name}` of shape {dims:?} does not split into {heads} heads"),
        ));
    }
    let (head_rows, half) = (rows / heads, rows / heads / 2);
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let from = h * head_rows + j * half + i;
                let to = h * head_rows + 2 * i + j;
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&values[from * cols..(from + 1) * cols]);
            }
        }
    }
    Ok(out)
}

/// Packs converted tensors into one buffer, quantising matrices where asked.
struct TensorWriter<'a> {
    dir: &'a Path,
    quantize: Option<LoadQuantization>,
    data: Vec<u8>,
    tensors: HashMap<String, TensorInfo>,
}

impl TensorWriter<'_> {
    fn add(&mut self, name: &str, dims: Vec<usize>, values: Vec<f32>) -> Result<()> {
        let cols = dims.last().copied().unwrap_or(0);
        // As llama.cpp's quantizer: matrices only, and never the experts' router.
        let quantize = self.quantize.filter(|_| {
            dims.len() >= 2 && cols % 32 == 0 && cols > 0 && !name.contains("ffn_gate_inp")
        });
        let (dtype, bytes) = match quantize {
            Some(format) => {
                let tensor = Tensor::from_vec(values, dims.clone(), &Device::Cpu)
                    .and_then(|t| QTensor::quantize(&t, format.dtype()))
                    .and_then(|q| q.data().map(|d| d.into_owned()))
                    .map_err(|e| {
                        Error::invalid_file(self.dir, format!("quantising `{name}`: {e}"))
                    })?;
                (format.dtype(), tensor)
            }
            None => (
                GgmlDType::F32,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        };
        let offset = self.data.len();
        self.data.extend_from_slice(&bytes);
        // Keep every tensor 32-byte aligned, as in a file.
        self.data.resize(self.data.len().next_multiple_of(32), 0);
        self.tensors.insert(
            name.to_string(),
            TensorInfo {
                dtype,
                shape: dims,
                offset,
                len: bytes.len(),
            },
        );
        Ok(())
    }
}

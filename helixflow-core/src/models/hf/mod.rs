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

mod config;
mod tensors;

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};

pub use config::{HfConfig, HfMetadata};
use tensors::{
    gguf_name, open_weights, permute_pairs, to_vec, Target, TensorWriter, UnknownTensor,
};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

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
    pub(super) fn dtype(self) -> GgmlDType {
        match self {
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4_0 => GgmlDType::Q4_0,
        }
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
    let mut meta = HfMetadata::new(arch.name);
    config::standard_metadata(&config, &mut meta)?;
    (conversion.metadata)(&config, &mut meta)?;

    let weights = open_weights(dir)?;
    let mut writer = TensorWriter::new(dir, quantize);
    let heads = config.usize("num_attention_heads")?;
    let kv_heads = config.usize_opt("num_key_value_heads")?.unwrap_or(heads);
    let mut experts: HashMap<String, Vec<(usize, Tensor)>> = HashMap::new();
    let mut names: Vec<String> = weights.tensors().into_iter().map(|(n, _)| n).collect();
    names.sort();
    for hf_name in &names {
        // An unknown tensor is refused before its bytes are read.
        let Some(target) = gguf_name(hf_name, &conversion).map_err(|UnknownTensor| {
            Error::UnsupportedModel(format!(
                "{}: tensor `{hf_name}` has no place in a `{}` model",
                dir.display(),
                arch.name
            ))
        })?
        else {
            continue;
        };
        let tensor = weights
            .load(hf_name, &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| Error::invalid_file(dir, format!("tensor `{hf_name}`: {e}")))?;
        match target {
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
    writer.finish(meta.values)
}

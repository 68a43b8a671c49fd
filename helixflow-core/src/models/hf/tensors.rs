//! A folder's safetensors weights, renamed and laid out as llama.cpp's converter writes them,
//! packed into the bytes of an in-memory GGUF.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};
use serde_json::Value;

use super::{HfConversion, LoadQuantization};
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, MetadataValue, TensorInfo};

/// The safetensors files of a folder: the shards of `model.safetensors.index.json`, else
/// `model.safetensors`.
pub(super) fn open_weights(dir: &Path) -> Result<MmapedSafetensors> {
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

/// A tensor with no place in the family's model: the folder is refused.
pub(super) struct UnknownTensor;

/// Where a Hugging Face tensor goes.
pub(super) enum Target {
    Tensor(String),
    /// Expert `index` of the stacked tensor `name`.
    Expert {
        name: String,
        index: usize,
    },
}

/// The GGUF name of a Hugging Face tensor, `None` for tensors the model does not use (rotary
/// caches, a multimodal model's vision tower), [`UnknownTensor`] for any other.
pub(super) fn gguf_name(
    hf: &str,
    conversion: &HfConversion,
) -> std::result::Result<Option<Target>, UnknownTensor> {
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
        return Ok(Some(Target::Tensor(name.into())));
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
        return Ok(None);
    }
    let Some((layer, part)) = rest.strip_prefix("layers.").and_then(|r| r.split_once('.')) else {
        return Err(UnknownTensor);
    };
    let Ok(layer) = layer.parse::<usize>() else {
        return Err(UnknownTensor);
    };
    if let Some(expert) = part.strip_prefix("mlp.experts.") {
        let Some((index, proj)) = expert.split_once('.') else {
            return Err(UnknownTensor);
        };
        let name = match proj {
            "gate_proj.weight" => "ffn_gate_exps.weight",
            "up_proj.weight" => "ffn_up_exps.weight",
            "down_proj.weight" => "ffn_down_exps.weight",
            _ => return Err(UnknownTensor),
        };
        let Ok(index) = index.parse() else {
            return Err(UnknownTensor);
        };
        return Ok(Some(Target::Expert {
            name: format!("blk.{layer}.{name}"),
            index,
        }));
    }
    let Some((module, kind)) = part.rsplit_once('.') else {
        return Err(UnknownTensor);
    };
    let name = match module {
        "self_attn.rotary_emb" => return Ok(None),
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
        _ => return Err(UnknownTensor),
    };
    Ok(Some(Target::Tensor(format!("blk.{layer}.{name}.{kind}"))))
}

/// A tensor's values in f32.
pub(super) fn to_vec(dir: &Path, name: &str, tensor: &Tensor) -> Result<Vec<f32>> {
    tensor
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| Error::invalid_file(dir, format!("tensor `{name}`: {e}")))
}

/// Reorders each head's rows (of a matrix, or values of a bias) from Hugging Face's two
/// halves to llama.cpp's neighbouring pairs: row `i` of a head's first half goes to `2i`, of
/// its second half to `2i + 1`.
pub(super) fn permute_pairs(
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
pub(super) struct TensorWriter<'a> {
    dir: &'a Path,
    quantize: Option<LoadQuantization>,
    data: Vec<u8>,
    tensors: HashMap<String, TensorInfo>,
}

impl<'a> TensorWriter<'a> {
    /// A writer for the folder `dir`, quantising its matrices to `quantize` if given.
    pub(super) fn new(dir: &'a Path, quantize: Option<LoadQuantization>) -> Self {
        Self {
            dir,
            quantize,
            data: Vec::new(),
            tensors: HashMap::new(),
        }
    }

    /// The GGUF of the tensors written, with `metadata`.
    pub(super) fn finish(self, metadata: HashMap<String, MetadataValue>) -> Result<GgufFile> {
        GgufFile::from_parts(self.dir, metadata, self.tensors, self.data)
    }

    pub(super) fn add(&mut self, name: &str, dims: Vec<usize>, values: Vec<f32>) -> Result<()> {
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

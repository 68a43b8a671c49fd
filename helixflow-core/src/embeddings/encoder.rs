//! The BERT encoder's forward pass, HelixFlow's own.
//!
//! A batch's sequences are stacked as rows without padding: every operation but attention
//! works token by token, so padding would only cost work, and attention runs per sequence and
//! head over that sequence's rows alone. The projections multiply with weights packed once at
//! load ([`PackedF32`]), the bias (and, for the two output projections, the residual) written
//! into the output first and the product added to it; the query, key and value projections
//! are one matrix. Attention packs each head's keys and values the same way. GELU and
//! LayerNorm are vectorised ([`helixflow_kernels::encoder`]), softmax takes ggml's vector
//! `expf`. The arithmetic is Hugging Face's `BertModel` up to the order of sums, which
//! moves an embedding's cosine to the reference by less than 1e-6.

use std::cell::RefCell;
use std::path::Path;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use candle_transformers::models::bert::{Config, HiddenAct};
use helixflow_kernels::encoder::{gelu_erf, layer_norm_rows};
use helixflow_kernels::math::{gelu_tanh, softmax_numerators};
use helixflow_kernels::pool::Pool;
use helixflow_kernels::sgemm::PackedF32;

use crate::error::{Error, Result};

/// Rows of a per-row operation (LayerNorm, GELU) per pool task.
const ROWS_PER_TASK: usize = 16;

/// A dense layer: `y = x · Wᵀ + b`.
struct Linear {
    weight: PackedF32,
    bias: Vec<f32>,
}

impl Linear {
    /// From `W` stored `[outputs, inputs]` as in the file.
    fn new(weight: &[f32], bias: Vec<f32>, outputs: usize, inputs: usize) -> Self {
        Self {
            weight: PackedF32::new(weight, outputs, inputs),
            bias,
        }
    }

    fn outputs(&self) -> usize {
        self.weight.n()
    }

    /// `out` (`rows × outputs`) = `x · Wᵀ + b`, plus `residual` where given (the same shape
    /// as `out`).
    fn forward(&self, x: &[f32], residual: Option<&[f32]>, out: &mut [f32]) {
        let (inputs, outputs) = (self.weight.k(), self.weight.n());
        let rows = x.len() / inputs;
        debug_assert_eq!(out.len(), rows * outputs);
        match residual {
            Some(residual) => {
                for (o, (r, b)) in out
                    .iter_mut()
                    .zip(residual.iter().zip(self.bias.iter().cycle()))
                {
                    *o = r + b;
                }
            }
            None => {
                for row in out.chunks_exact_mut(outputs) {
                    row.copy_from_slice(&self.bias);
                }
            }
        }
        self.weight.matmul_add(x, inputs, out, outputs, rows, true);
    }
}

/// LayerNorm's weight and bias.
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// One transformer layer.
struct Layer {
    /// Query, key and value projections stacked: `[3 · hidden, hidden]`.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

/// A BERT encoder's weights and shape.
pub(super) struct BertEncoder {
    word: Vec<f32>,
    position: Vec<f32>,
    /// Token type 0's embedding: HelixFlow embeds single segments.
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    vocab: usize,
    max_positions: usize,
    eps: f32,
    activation: HiddenAct,
}

/// The tensors of a safetensors file, read as f32.
struct Tensors<'a> {
    file: MmapedSafetensors,
    path: &'a Path,
    prefix: String,
}

impl Tensors<'_> {
    /// Tensor `name` (after the prefix) as f32, which must have `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let bad = |reason: String| Error::invalid_file(self.path, reason);
        let tensor = self
            .file
            .load(&full, &Device::Cpu)
            .map_err(|e| bad(format!("tensor `{full}`: {e}")))?;
        if tensor.dims() != shape {
            return Err(bad(format!(
                "tensor `{full}` has shape {:?}, expected {shape:?}",
                tensor.dims()
            )));
        }
        tensor
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| bad(format!("tensor `{full}`: {e}")))
    }

    fn linear(&self, name: &str, outputs: usize, inputs: usize) -> Result<Linear> {
        let (weight, bias) = self.dense(name, outputs, inputs)?;
        Ok(Linear::new(&weight, bias, outputs, inputs))
    }

    /// A dense layer's weight and bias as read (to be stacked with others).
    fn dense(&self, name: &str, outputs: usize, inputs: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((
            self.get(&format!("{name}.weight"), &[outputs, inputs])?,
            self.get(&format!("{name}.bias"), &[outputs])?,
        ))
    }

    fn norm(&self, name: &str, width: usize) -> Result<Norm> {
        Ok(Norm {
            weight: self.get(&format!("{name}.weight"), &[width])?,
            bias: self.get(&format!("{name}.bias"), &[width])?,
        })
    }
}

impl BertEncoder {
    /// Reads the weights of `config` from the safetensors file `path` (F32, F16 or BF16),
    /// named as Hugging Face's `BertModel` names them, at the top level or under `bert.` or
    /// the model type.
    pub(super) fn load(path: &Path, config: &Config) -> Result<Self> {
        // SAFETY: the mapping only lives while the weights are copied out; the safetensors
        // header is validated against the file length before any access. As with any mmap,
        // the file must not be truncated by another process meanwhile.
        let file = unsafe { MmapedSafetensors::new(path) }
            .map_err(|e| Error::invalid_file(path, e.to_string()))?;
        let mut prefixes = vec![String::new(), "bert.".to_string()];
        prefixes.extend(config.model_type.as_ref().map(|t| format!("{t}.")));
        let probe = "embeddings.word_embeddings.weight";
        let prefix = prefixes
            .into_iter()
            .find(|p| file.get(&format!("{p}{probe}")).is_ok())
            .ok_or_else(|| Error::invalid_file(path, format!("no tensor `{probe}`")))?;
        let t = Tensors { file, path, prefix };
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let token_types = t.get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let (mut weight, mut bias) = (Vec::with_capacity(3 * h * h), Vec::with_capacity(3 * h));
            for part in ["query", "key", "value"] {
                let (w, b) = t.dense(&format!("{p}.attention.self.{part}"), h, h)?;
                weight.extend(w);
                bias.extend(b);
            }
            layers.push(Layer {
                qkv: Linear::new(&weight, bias, 3 * h, h),
                attention_out: t.linear(&format!("{p}.attention.output.dense"), h, h)?,
                attention_norm: t.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                intermediate: t.linear(&format!("{p}.intermediate.dense"), i, h)?,
                output: t.linear(&format!("{p}.output.dense"), h, i)?,
                output_norm: t.norm(&format!("{p}.output.LayerNorm"), h)?,
            });
        }
        Ok(Self {
            word: t.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: t.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type: token_types[..h].to_vec(),
            embedding_norm: t.norm("embeddings.LayerNorm", h)?,
            layers,
            hidden: h,
            heads: config.num_attention_heads,
            vocab: config.vocab_size,
            max_positions: config.max_position_embeddings,
            eps: config.layer_norm_eps as f32,
            activation: config.hidden_act,
        })
    }

    /// The last layer's hidden states of every token of `sequences`, stacked: the rows of
    /// sequence `s` follow those of the sequences before it (`Σ len × hidden` values).
    pub(super) fn forward(&self, sequences: &[&[u32]]) -> Result<Vec<f32>> {
        let h = self.hidden;
        let mut spans = Vec::with_capacity(sequences.len());
        let mut start = 0;
        for sequence in sequences {
            if sequence.len() > self.max_positions {
                return Err(Error::InvalidRequest(format!(
                    "a sequence of {} tokens is longer than the encoder's {} positions",
                    sequence.len(),
                    self.max_positions
                )));
            }
            spans.push((start, sequence.len()));
            start += sequence.len();
        }
        let tokens = start;
        let mut x = vec![0f32; tokens * h];
        for (sequence, &(first, _)) in sequences.iter().zip(&spans) {
            for (pos, &id) in sequence.iter().enumerate() {
                let id = id as usize;
                if id >= self.vocab {
                    return Err(Error::InvalidRequest(format!(
                        "token id {id} is outside the vocabulary of {} tokens",
                        self.vocab
                    )));
                }
                let row = &mut x[(first + pos) * h..(first + pos + 1) * h];
                let word = &self.word[id * h..(id + 1) * h];
                let position = &self.position[pos * h..(pos + 1) * h];
                for (((o, &w), &p), &t) in
                    row.iter_mut().zip(word).zip(position).zip(&self.token_type)
                {
                    *o = w + p + t;
                }
            }
        }
        norm_rows(&mut x, &self.embedding_norm, self.eps);

        let mut qkv = vec![0f32; tokens * 3 * h];
        let mut context = vec![0f32; tokens * h];
        let mut attended = vec![0f32; tokens * h];
        let inner = self.layers.first().map_or(0, |l| l.intermediate.outputs());
        let mut intermediate = vec![0f32; tokens * inner];
        for layer in &self.layers {
            layer.qkv.forward(&x, None, &mut qkv);
            self.attention(&qkv, &spans, &mut context);
            layer
                .attention_out
                .forward(&context, Some(&x), &mut attended);
            norm_rows(&mut attended, &layer.attention_norm, self.eps);
            layer
                .intermediate
                .forward(&attended, None, &mut intermediate);
            activate(self.activation, &mut intermediate, inner);
            layer.output.forward(&intermediate, Some(&attended), &mut x);
            norm_rows(&mut x, &layer.output_norm, self.eps);
        }
        Ok(x)
    }

    /// Self-attention of each sequence's rows and each head, from the stacked query, key and
    /// value rows `qkv`, into `context` (`tokens × hidden`).
    fn attention(&self, qkv: &[f32], spans: &[(usize, usize)], context: &mut [f32]) {
        let (h, heads) = (self.hidden, self.heads);
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let stride = 3 * h;
        context.fill(0.0);
        let out = SendPtr(context.as_mut_ptr());
        Pool::global().for_each(spans.len() * heads, |task| {
            let ((first, len), head) = (spans[task / heads], task % heads);
            if len == 0 {
                return;
            }
            let at = |row: usize, part: usize, col: usize| {
                qkv[(first + row) * stride + part * h + head * d + col]
            };
            SCRATCH.with_borrow_mut(|(keys, values, scores)| {
                // Scores: the queries times the keys (as a `len × d` matrix).
                keys.refill(len, d, |j, c| at(j, 1, c));
                scores.clear();
                scores.resize(len * len, 0.0);
                let queries = qkv[first * stride + head * d..].as_ptr();
                // SAFETY: the query rows are `len` rows of `d` values `stride` apart inside
                // `qkv`; `scores` is this thread's `len × len`.
                unsafe { keys.matmul_add_unshared(queries, stride, scores.as_mut_ptr(), len, len) };
                for row in scores.chunks_exact_mut(len) {
                    row.iter_mut().for_each(|s| *s *= scale);
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum = softmax_numerators(row, max);
                    let inverse = (1.0 / sum) as f32;
                    row.iter_mut().for_each(|p| *p *= inverse);
                }
                // The context: the probabilities times the values (as a `d × len` matrix).
                values.refill(d, len, |c, j| at(j, 2, c));
                // SAFETY: `scores` is `len × len`; the task adds into head `head`'s `d`
                // columns of its sequence's `len` rows of `context`, which no other task
                // touches, and `context` outlives the loop.
                unsafe {
                    values.matmul_add_unshared(
                        scores.as_ptr(),
                        len,
                        out.get().add(first * h + head * d),
                        h,
                        len,
                    )
                };
            });
        });
    }
}

thread_local! {
    /// Each thread's packed keys and values and attention scores, kept between calls.
    static SCRATCH: RefCell<(PackedF32, PackedF32, Vec<f32>)> = RefCell::default();
}

/// A pointer to the context rows, which the attention tasks write apart.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

// SAFETY: each task writes a disjoint part of the buffer, which outlives the loop.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// LayerNorm of every row of `x`, on the pool.
fn norm_rows(x: &mut [f32], norm: &Norm, eps: f32) {
    let width = norm.weight.len();
    Pool::global().for_each_chunk_mut(x, ROWS_PER_TASK * width, |_, rows| {
        layer_norm_rows(rows, &norm.weight, &norm.bias, eps);
    });
}

/// The feed-forward activation over `x` (rows of `width`), on the pool.
fn activate(activation: HiddenAct, x: &mut [f32], width: usize) {
    Pool::global().for_each_chunk_mut(x, ROWS_PER_TASK * width, |_, part| match activation {
        HiddenAct::Gelu => gelu_erf(part),
        HiddenAct::GeluApproximate => part.iter_mut().for_each(|v| *v = gelu_tanh(*v)),
        HiddenAct::Relu => part.iter_mut().for_each(|v| *v = v.max(0.0)),
    });
}

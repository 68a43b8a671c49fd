//! The llama-family decoder (Llama 2/3, TinyLlama, SmolLM2, ...) over GGUF weights.
//!
//! Unlike `candle_transformers::models::quantized_llama`, this model keeps no state: the
//! key/value cache of every sequence is a [`KvState`] owned by the caller (the engine), and
//! [`LlamaModel::forward`] runs one *packed* step over several sequences at different
//! positions. The projections and the MLP run over all new tokens of all sequences at once;
//! rotary embedding, cache append and attention run per sequence.
//!
//! Numerics follow llama.cpp where it matters for reproducing its greedy output: rotary angles
//! are computed by repeated f32 multiplication, the cache holds f16, and queries and attention
//! probabilities are rounded to f16 before their dot products, as ggml's f16 matmuls do.

use candle_core::quantized::QMatMul;
use candle_core::{Device, Module, Tensor};
use half::f16;
use rayon::prelude::*;

use super::kernels;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// Hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Dimensions of each head that are rotated (usually `head_dim`).
    pub rope_dim: usize,
    /// Rotary base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// The context length the model was trained for.
    pub context_length: usize,
}

impl LlamaConfig {
    /// Reads the config of a llama-architecture GGUF.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let arch = gguf.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(Error::UnsupportedModel(format!(
                "{}: architecture `{arch}` (supported: llama)",
                gguf.path().display()
            )));
        }
        let get = |key: &str| -> Result<usize> {
            let v = gguf.get_u64(&format!("llama.{key}"))?;
            usize::try_from(v).map_err(|_| Error::invalid_file(gguf.path(), "absurd value"))
        };
        let hidden_size = get("embedding_length")?;
        let num_heads = get("attention.head_count")?;
        let num_kv_heads = match gguf.get("llama.attention.head_count_kv") {
            Some(_) => get("attention.head_count_kv")?,
            None => num_heads,
        };
        if num_heads == 0 || num_kv_heads == 0 || hidden_size % num_heads != 0 {
            return Err(Error::invalid_file(gguf.path(), "inconsistent head counts"));
        }
        if num_heads % num_kv_heads != 0 {
            return Err(Error::invalid_file(
                gguf.path(),
                "head_count is not a multiple of head_count_kv",
            ));
        }
        let head_dim = hidden_size / num_heads;
        let rope_dim = match gguf.get("llama.rope.dimension_count") {
            Some(_) => get("rope.dimension_count")?,
            None => head_dim,
        };
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(Error::invalid_file(gguf.path(), "bad rope.dimension_count"));
        }
        let token_embd = gguf
            .tensor_infos()
            .get("token_embd.weight")
            .ok_or_else(|| Error::invalid_file(gguf.path(), "tensor token_embd.weight missing"))?;
        let vocab_size = token_embd.shape[0];
        let context_length = match gguf.get("llama.context_length") {
            Some(_) => get("context_length")?,
            None => 2048,
        };
        Ok(Self {
            vocab_size,
            hidden_size,
            intermediate_size: get("feed_forward_length")?,
            num_layers: get("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rope_dim,
            rope_theta: gguf
                .get("llama.rope.freq_base")
                .and_then(|v| v.as_f64())
                .unwrap_or(10_000.0) as f32,
            rms_norm_eps: gguf
                .get("llama.attention.layer_norm_rms_epsilon")
                .and_then(|v| v.as_f64())
                .unwrap_or(1e-5) as f32,
            context_length,
        })
    }

    /// Width of the key (and value) projection: `num_kv_heads * head_dim`.
    pub fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

/// One transformer block's weights.
struct Block {
    attn_norm: Vec<f32>,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    ffn_norm: Vec<f32>,
    w_gate: QMatMul,
    w_up: QMatMul,
    w_down: QMatMul,
}

/// The key/value cache of one sequence, for every layer.
///
/// Rows are appended as the sequence advances; the vectors grow geometrically, so there are
/// no per-step whole-cache copies.
#[derive(Debug, Clone, Default)]
pub struct KvState {
    /// Per layer: keys, `[position][kv_head][head_dim]`, as f16 like llama.cpp's cache.
    keys: Vec<Vec<f16>>,
    /// Per layer: values, same layout.
    values: Vec<Vec<f16>>,
    len: usize,
}

impl KvState {
    /// An empty cache for `config`'s model.
    pub fn new(config: &LlamaConfig) -> Self {
        Self {
            keys: vec![Vec::new(); config.num_layers],
            values: vec![Vec::new(); config.num_layers],
            len: 0,
        }
    }

    /// Positions cached so far (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops positions from `len` on (to recompute them, or to reuse a prefix).
    pub fn truncate(&mut self, len: usize, kv_width: usize) {
        let len = len.min(self.len);
        for layer in self.keys.iter_mut().chain(self.values.iter_mut()) {
            layer.truncate(len * kv_width);
        }
        self.len = len;
    }

    /// Bytes of cache memory in use.
    pub fn bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(self.values.iter())
            .map(|l| l.len() * 2)
            .sum()
    }
}

/// One sequence's part of a packed forward step.
pub struct SeqStep<'a> {
    /// The new tokens; their positions continue from `kv.len()`.
    pub tokens: &'a [u32],
    /// The sequence's cache; the new tokens are appended to it.
    pub kv: &'a mut KvState,
}

/// A llama-family model with weights in memory and no per-sequence state.
pub struct LlamaModel {
    config: LlamaConfig,
    embeddings: Tensor,
    blocks: Vec<Block>,
    output_norm: Vec<f32>,
    output: QMatMul,
    /// Per rotated pair, the divisor llama 3.1-style frequency scaling applies (1 if none).
    rope_freq_factors: Vec<f32>,
    device: Device,
}

impl std::fmt::Debug for LlamaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaModel")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LlamaModel {
    /// Loads the weights of a llama-architecture GGUF onto the CPU.
    pub fn load(gguf: &GgufFile) -> Result<Self> {
        let config = LlamaConfig::from_gguf(gguf)?;
        let device = Device::Cpu;
        let path = gguf.path();
        let expect_shape = |name: &str, shape: &[usize]| -> Result<()> {
            let info = gguf
                .tensor_infos()
                .get(name)
                .ok_or_else(|| Error::invalid_file(path, format!("tensor `{name}` is missing")))?;
            if info.shape != shape {
                return Err(Error::invalid_file(
                    path,
                    format!(
                        "tensor `{name}` has shape {:?}, expected {shape:?}",
                        info.shape
                    ),
                ));
            }
            Ok(())
        };
        let (h, i, kv) = (
            config.hidden_size,
            config.intermediate_size,
            config.kv_width(),
        );
        let matmul = |name: &str, shape: &[usize]| -> Result<QMatMul> {
            expect_shape(name, shape)?;
            Ok(QMatMul::from_qtensor(gguf.tensor(name, &device)?)?)
        };
        let vector = |name: &str, len: usize| -> Result<Vec<f32>> {
            expect_shape(name, &[len])?;
            Ok(gguf
                .tensor(name, &device)?
                .dequantize(&device)?
                .to_vec1::<f32>()?)
        };

        expect_shape("token_embd.weight", &[config.vocab_size, h])?;
        let embeddings = gguf
            .tensor("token_embd.weight", &device)?
            .dequantize(&device)?;
        let mut blocks = Vec::with_capacity(config.num_layers);
        for l in 0..config.num_layers {
            let p = format!("blk.{l}");
            blocks.push(Block {
                attn_norm: vector(&format!("{p}.attn_norm.weight"), h)?,
                wq: matmul(&format!("{p}.attn_q.weight"), &[h, h])?,
                wk: matmul(&format!("{p}.attn_k.weight"), &[kv, h])?,
                wv: matmul(&format!("{p}.attn_v.weight"), &[kv, h])?,
                wo: matmul(&format!("{p}.attn_output.weight"), &[h, h])?,
                ffn_norm: vector(&format!("{p}.ffn_norm.weight"), h)?,
                w_gate: matmul(&format!("{p}.ffn_gate.weight"), &[i, h])?,
                w_up: matmul(&format!("{p}.ffn_up.weight"), &[i, h])?,
                w_down: matmul(&format!("{p}.ffn_down.weight"), &[h, i])?,
            });
        }
        let output_norm = vector("output_norm.weight", h)?;
        // Models with tied embeddings (SmolLM2) have no separate output matrix.
        let output = if gguf.has_tensor("output.weight") {
            matmul("output.weight", &[config.vocab_size, h])?
        } else {
            QMatMul::from_qtensor(gguf.tensor("token_embd.weight", &device)?)?
        };
        let rope_freq_factors = if gguf.has_tensor("rope_freqs.weight") {
            vector("rope_freqs.weight", config.rope_dim / 2)?
        } else {
            vec![1.0; config.rope_dim / 2]
        };
        Ok(Self {
            config,
            embeddings,
            blocks,
            output_norm,
            output,
            rope_freq_factors,
            device,
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// A fresh, empty cache for one sequence.
    pub fn new_kv_state(&self) -> KvState {
        KvState::new(&self.config)
    }

    /// Runs one packed step: appends every sequence's new tokens to its cache and returns,
    /// per sequence, the logits of its last new token.
    ///
    /// Sequences may be at different positions and have different numbers of new tokens
    /// (prefill chunks and single decode tokens mix freely). A sequence with no new tokens is
    /// an error, as is a token id outside the vocabulary or a position beyond the context.
    pub fn forward(&self, batch: &mut [SeqStep<'_>]) -> Result<Vec<Vec<f32>>> {
        let result = self.forward_packed(batch);
        if result.is_err() {
            // Leave every cache as it was: a failed step must not leave half-appended layers.
            let kvw = self.config.kv_width();
            for seq in batch.iter_mut() {
                let len = seq.kv.len();
                seq.kv.truncate(len, kvw);
            }
        }
        result
    }

    fn forward_packed(&self, batch: &mut [SeqStep<'_>]) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.config;
        let mut spans = Vec::with_capacity(batch.len());
        let mut all_tokens = Vec::new();
        for seq in batch.iter() {
            if seq.tokens.is_empty() {
                return Err(Error::InvalidRequest(
                    "a sequence step has no tokens".into(),
                ));
            }
            if let Some(&bad) = seq.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
                return Err(Error::InvalidRequest(format!(
                    "token id {bad} is outside the vocabulary of {} tokens",
                    cfg.vocab_size
                )));
            }
            let end = seq.kv.len() + seq.tokens.len();
            if end > cfg.context_length {
                return Err(Error::InvalidRequest(format!(
                    "sequence of {end} tokens exceeds the context of {} tokens",
                    cfg.context_length
                )));
            }
            spans.push(Span {
                row: all_tokens.len(),
                len: seq.tokens.len(),
                start_pos: seq.kv.len(),
            });
            all_tokens.extend_from_slice(seq.tokens);
        }
        if all_tokens.is_empty() {
            return Ok(Vec::new());
        }
        let n = all_tokens.len();
        let (h, kvw) = (cfg.hidden_size, cfg.kv_width());

        let ids = Tensor::from_slice(&all_tokens, n, &self.device)?;
        let mut x = self
            .embeddings
            .index_select(&ids, 0)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let positions: Vec<usize> = spans
            .iter()
            .flat_map(|s| s.start_pos..s.start_pos + s.len)
            .collect();
        let mut normed = vec![0f32; n * h];
        let mut attn = vec![0f32; n * h];

        for (layer, block) in self.blocks.iter().enumerate() {
            kernels::rms_norm_rows(&x, &block.attn_norm, cfg.rms_norm_eps, &mut normed);
            let normed_t = Tensor::from_slice(&normed, (n, h), &self.device)?;
            let mut q = to_vec(&block.wq.forward(&normed_t)?)?;
            let mut k = to_vec(&block.wk.forward(&normed_t)?)?;
            let v = to_vec(&block.wv.forward(&normed_t)?)?;
            for (row, &pos) in positions.iter().enumerate() {
                self.rope(&mut q[row * h..(row + 1) * h], pos);
                self.rope(&mut k[row * kvw..(row + 1) * kvw], pos);
            }
            for (seq, span) in batch.iter_mut().zip(&spans) {
                let rows = span.row * kvw..(span.row + span.len) * kvw;
                seq.kv.keys[layer].extend(k[rows.clone()].iter().map(|&f| f16::from_f32(f)));
                seq.kv.values[layer].extend(v[rows].iter().map(|&f| f16::from_f32(f)));
            }
            self.attention(batch, &spans, layer, &q, &mut attn);
            let o = to_vec(&block.wo.forward(&Tensor::from_slice(
                &attn,
                (n, h),
                &self.device,
            )?)?)?;
            kernels::add_assign(&mut x, &o);

            kernels::rms_norm_rows(&x, &block.ffn_norm, cfg.rms_norm_eps, &mut normed);
            let normed_t = Tensor::from_slice(&normed, (n, h), &self.device)?;
            let gate = block.w_gate.forward(&normed_t)?;
            let up = block.w_up.forward(&normed_t)?;
            let mut gated = to_vec(&gate)?;
            kernels::silu_mul(&mut gated, &to_vec(&up)?);
            let gated_t = Tensor::from_slice(&gated, (n, cfg.intermediate_size), &self.device)?;
            let down = to_vec(&block.w_down.forward(&gated_t)?)?;
            kernels::add_assign(&mut x, &down);
        }
        for seq in batch.iter_mut() {
            seq.kv.len += seq.tokens.len();
        }

        // Only the last position of each sequence needs logits.
        let mut last = vec![0f32; spans.len() * h];
        for (i, span) in spans.iter().enumerate() {
            let row = span.row + span.len - 1;
            kernels::rms_norm_rows(
                &x[row * h..(row + 1) * h],
                &self.output_norm,
                cfg.rms_norm_eps,
                &mut last[i * h..(i + 1) * h],
            );
        }
        let logits =
            self.output
                .forward(&Tensor::from_slice(&last, (spans.len(), h), &self.device)?)?;
        Ok(logits.to_vec2::<f32>()?)
    }

    /// Rotates adjacent pairs of each head's first `rope_dim` dimensions, as ggml's
    /// `GGML_ROPE_TYPE_NORM` does (the layout llama GGUF weights are converted to).
    fn rope(&self, row: &mut [f32], pos: usize) {
        let cfg = &self.config;
        let theta_scale = cfg.rope_theta.powf(-2.0 / cfg.rope_dim as f32);
        for head in row.chunks_exact_mut(cfg.head_dim) {
            // The angle advances by repeated f32 multiplication, exactly as ggml computes it.
            let mut theta = pos as f32;
            for (pair, factor) in head[..cfg.rope_dim]
                .chunks_exact_mut(2)
                .zip(&self.rope_freq_factors)
            {
                let angle = theta / factor;
                let (sin, cos) = angle.sin_cos();
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * cos - b * sin;
                pair[1] = a * sin + b * cos;
                theta *= theta_scale;
            }
        }
    }

    /// Causal attention of every new token over its own sequence's cache.
    fn attention(
        &self,
        batch: &[SeqStep<'_>],
        spans: &[Span],
        layer: usize,
        q: &[f32],
        out: &mut [f32],
    ) {
        let cfg = &self.config;
        let h = cfg.hidden_size;
        let scale = 1.0 / (cfg.head_dim as f32).sqrt();
        let geometry = kernels::AttentionGeometry {
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            scale,
        };
        // Map each packed row to its sequence and position so rows can run in parallel.
        let mut row_seq = Vec::with_capacity(out.len() / h);
        for (s, span) in spans.iter().enumerate() {
            for t in 0..span.len {
                row_seq.push((s, span.start_pos + t));
            }
        }
        out.par_chunks_mut(h)
            .zip(q.par_chunks(h))
            .zip(row_seq.par_iter())
            .for_each(|((out_row, q_row), &(s, pos))| {
                let kv = &batch[s].kv;
                kernels::attend_row(
                    &geometry,
                    q_row,
                    &kv.keys[layer],
                    &kv.values[layer],
                    pos + 1,
                    out_row,
                );
            });
    }
}

/// Where a sequence's new tokens sit in the packed batch.
struct Span {
    row: usize,
    len: usize,
    start_pos: usize,
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

//! The llama-family decoder (Llama 2/3, TinyLlama, SmolLM2, ...) over GGUF weights.
//!
//! Unlike `candle_transformers::models::quantized_llama`, this model keeps no state: the
//! key/value cache of every sequence is a [`KvState`] owned by the caller (the engine), and
//! [`LlamaModel::forward`] runs one *packed* step over several sequences at different
//! positions. The projections and the MLP run over all new tokens of all sequences at once;
//! rotary embedding, cache append and attention run per sequence.
//!
//! The arithmetic is llama.cpp's (see [`crate::cpu`]): greedy decoding reproduces its tokens.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use candle_core::Device;
use helixflow_kernels::packed::Accumulation;
use helixflow_kernels::pool::Pool;

use super::Logits;
use crate::cpu::attention::{AttentionScratch, AttentionTask, ProductOrder};
use crate::cpu::{
    attend_row, attend_row_online, math, AttentionGeometry, GatedProjection, MatrixGroup,
    WeightMatrix,
};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::kv_cache::{BlockLayout, KvPool, SequenceKv};

/// Positions per KV block for caches made by [`LlamaModel::new_kv_state`].
pub const DEFAULT_BLOCK_SIZE: usize = 16;

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
        // Each layer has several tensors: a count the file cannot hold is a lie, caught here
        // before anything is sized by it.
        let num_layers = get("block_count")?;
        if num_layers > gguf.tensor_infos().len() {
            return Err(Error::invalid_file(
                gguf.path(),
                format!(
                    "block_count is {num_layers} but the file holds {} tensors",
                    gguf.tensor_infos().len()
                ),
            ));
        }
        Ok(Self {
            vocab_size,
            hidden_size,
            intermediate_size: get("feed_forward_length")?,
            num_layers,
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
    /// The query, key and value projections, which share their input.
    wqkv: MatrixGroup,
    wo: WeightMatrix,
    ffn_norm: Vec<f32>,
    /// The MLP's gate and up projections with the SwiGLU between them.
    w_gate_up: GatedProjection,
    w_down: WeightMatrix,
}

/// The token embedding table: rows looked up straight from the quantised matrix where this
/// crate has its format (shared with the output projection when the model ties them), or
/// dequantised once otherwise.
enum Embeddings {
    Quantized(Arc<WeightMatrix>),
    Dense(Vec<f32>),
}

/// One sequence's part of a packed forward step.
pub struct SeqStep<'a> {
    /// The new tokens; their positions continue from `kv.len()`.
    pub tokens: &'a [u32],
    /// The sequence's cache; the new tokens are appended to it.
    pub kv: &'a mut SequenceKv,
    /// Length of the sequence's prompt. Prompt positions are computed in llama.cpp's
    /// prompt-batch order and later positions in its single-token order (see
    /// [`ProductOrder`]), so a token's numbers depend only on its role, never on how the
    /// scheduler chunked or batched it.
    pub prompt_len: usize,
}

/// A llama-family model with weights in memory and no per-sequence state.
pub struct LlamaModel {
    config: LlamaConfig,
    embeddings: Embeddings,
    blocks: Vec<Block>,
    output_norm: Vec<f32>,
    output: Arc<WeightMatrix>,
    /// Per rotated pair, the divisor llama 3.1-style frequency scaling applies (1 if none).
    rope_freq_factors: Vec<f32>,
    /// Whether attention runs with an online softmax ([`attend_row_online`]) rather than
    /// llama.cpp's two passes.
    online_softmax: bool,
    /// The order in which the packed matrix products add up ([`Accumulation`]).
    products: Accumulation,
    buffers: Mutex<StepBuffers>,
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
        let matrix = |name: &str, shape: &[usize]| -> Result<WeightMatrix> {
            expect_shape(name, shape)?;
            WeightMatrix::from_gguf(gguf, name)
        };
        let vector = |name: &str, len: usize| -> Result<Vec<f32>> {
            expect_shape(name, &[len])?;
            Ok(gguf
                .tensor(name, &device)?
                .dequantize(&device)?
                .to_vec1::<f32>()?)
        };

        let token_embd = Arc::new(matrix("token_embd.weight", &[config.vocab_size, h])?);
        let mut probe = vec![0f32; h];
        let embeddings = if token_embd.dequantize_row(0, &mut probe) {
            Embeddings::Quantized(token_embd.clone())
        } else {
            Embeddings::Dense(
                gguf.tensor("token_embd.weight", &device)?
                    .dequantize(&device)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            )
        };
        let mut blocks = Vec::new();
        for l in 0..config.num_layers {
            let p = format!("blk.{l}");
            blocks.push(Block {
                attn_norm: vector(&format!("{p}.attn_norm.weight"), h)?,
                wqkv: MatrixGroup::new(vec![
                    matrix(&format!("{p}.attn_q.weight"), &[h, h])?,
                    matrix(&format!("{p}.attn_k.weight"), &[kv, h])?,
                    matrix(&format!("{p}.attn_v.weight"), &[kv, h])?,
                ])?,
                wo: matrix(&format!("{p}.attn_output.weight"), &[h, h])?,
                ffn_norm: vector(&format!("{p}.ffn_norm.weight"), h)?,
                w_gate_up: GatedProjection::new(
                    matrix(&format!("{p}.ffn_gate.weight"), &[i, h])?,
                    matrix(&format!("{p}.ffn_up.weight"), &[i, h])?,
                )?,
                w_down: matrix(&format!("{p}.ffn_down.weight"), &[h, i])?,
            });
        }
        let output_norm = vector("output_norm.weight", h)?;
        // Models with tied embeddings (SmolLM2) have no separate output matrix.
        let output = if gguf.has_tensor("output.weight") {
            Arc::new(matrix("output.weight", &[config.vocab_size, h])?)
        } else {
            token_embd
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
            online_softmax: std::env::var_os("HELIXFLOW_ONLINE_SOFTMAX").is_some_and(|v| v == "1"),
            products: Accumulation::from_env(),
            buffers: Mutex::default(),
        })
    }

    /// Runs attention with an online softmax: one pass over the cached keys and values per
    /// token, without a buffer of scores, at the price of llama.cpp's last bits (greedy
    /// decoding may part from its tokens after a while). Off by default;
    /// `HELIXFLOW_ONLINE_SOFTMAX=1` turns it on at load.
    pub fn set_online_softmax(&mut self, on: bool) {
        self.online_softmax = on;
    }

    /// Adds up the packed matrix products (`Q4_0`, `Q4_1` and `Q8_0` weights on x86 with AVX2)
    /// in the order `order`. [`Accumulation::Blocks`] makes batched decoding and prefill about
    /// 1.5 times as fast, at the price of llama.cpp's last bits (greedy decoding may part from
    /// its tokens after a while). [`Accumulation::Ggml`] by default;
    /// `HELIXFLOW_BLOCK_PRODUCTS=1` asks for block order at load.
    pub fn set_products(&mut self, order: Accumulation) {
        self.products = order;
    }

    /// The order the packed matrix products add up in ([`Self::set_products`]).
    pub fn products(&self) -> Accumulation {
        self.products
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The shape of this model's KV cache blocks of `block_size` positions.
    pub fn block_layout(&self, block_size: usize) -> BlockLayout {
        BlockLayout {
            block_size,
            num_layers: self.config.num_layers,
            kv_width: self.config.kv_width(),
        }
    }

    /// A fresh, empty cache for one sequence run on its own, with a pool of its own.
    pub fn new_kv_state(&self) -> SequenceKv {
        SequenceKv::new(KvPool::unbounded(self.block_layout(DEFAULT_BLOCK_SIZE)))
    }

    /// Runs one packed step: appends every sequence's new tokens to its cache and returns,
    /// per sequence, the logits of its last new token.
    ///
    /// Sequences may be at different positions and have different numbers of new tokens
    /// (prefill chunks and single decode tokens mix freely). A sequence with no new tokens is
    /// an error, as is a token id outside the vocabulary or a position beyond the context.
    pub fn forward(&self, batch: &mut [SeqStep<'_>]) -> Result<Vec<Vec<f32>>> {
        let mut logits = Logits::new();
        self.forward_into(batch, &mut logits)?;
        Ok(logits.to_rows())
    }

    /// [`Self::forward`] into `logits` (row `i` for `batch[i]`), whose buffer a decode loop
    /// keeps from step to step instead of allocating each sequence's logits anew.
    pub fn forward_into(&self, batch: &mut [SeqStep<'_>], logits: &mut Logits) -> Result<()> {
        let result = self.forward_packed(batch, logits);
        if result.is_err() {
            // Leave every cache as it was: no half-written layers, no blocks held for nothing.
            for seq in batch.iter_mut() {
                seq.kv.release_unused();
            }
        }
        result
    }

    /// Whether one sequence can take a step of `tokens` after `cached` positions: tokens in
    /// the vocabulary, positions within the context. What fails here belongs to that sequence
    /// alone; an engine checks it before batching the sequence with others.
    pub fn check_step(&self, tokens: &[u32], cached: usize) -> Result<()> {
        let cfg = &self.config;
        if tokens.is_empty() {
            return Err(Error::InvalidRequest(
                "a sequence step has no tokens".into(),
            ));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(Error::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                cfg.vocab_size
            )));
        }
        let end = cached.saturating_add(tokens.len());
        if end > cfg.context_length {
            return Err(Error::ContextOverflow {
                prompt_tokens: cached,
                max_tokens: tokens.len(),
                context: cfg.context_length,
            });
        }
        Ok(())
    }

    fn forward_packed(&self, batch: &mut [SeqStep<'_>], logits: &mut Logits) -> Result<()> {
        let cfg = &self.config;
        let mut spans = Vec::with_capacity(batch.len());
        let mut all_tokens = Vec::new();
        for seq in batch.iter() {
            self.check_step(seq.tokens, seq.kv.len())?;
            spans.push(Span {
                row: all_tokens.len(),
                len: seq.tokens.len(),
                start_pos: seq.kv.len(),
                prompt_len: seq.prompt_len,
            });
            all_tokens.extend_from_slice(seq.tokens);
        }
        if all_tokens.is_empty() {
            logits.reset(0, cfg.vocab_size);
            return Ok(());
        }
        if let Some(kv) = batch
            .iter()
            .map(|s| &s.kv)
            .find(|kv| kv.pool().layout() != &self.block_layout(kv.pool().layout().block_size))
        {
            return Err(Error::InvalidRequest(format!(
                "a KV cache of layout {:?} does not fit this model",
                kv.pool().layout()
            )));
        }
        for seq in batch.iter_mut() {
            let new_len = seq.kv.len() + seq.tokens.len();
            seq.kv.reserve(new_len)?;
        }
        let n = all_tokens.len();
        let (h, kvw, inter) = (cfg.hidden_size, cfg.kv_width(), cfg.intermediate_size);

        // The step's buffers are the model's, reused from step to step (a second thread
        // stepping the same model meanwhile gets buffers of its own).
        let mut shared = self.buffers.try_lock();
        let mut own = StepBuffers::default();
        let buffers = match shared.as_deref_mut() {
            Ok(buffers) => buffers,
            Err(_) => &mut own,
        };
        let StepBuffers {
            x,
            normed,
            attn,
            q,
            k,
            v,
            projected,
            gate,
            rope,
            rows,
        } = buffers;
        let x = sized(x, n * h);
        let normed = sized(normed, n * h);
        let attn = sized(attn, n * h);
        let (q, k, v) = (sized(q, n * h), sized(k, n * kvw), sized(v, n * kvw));
        let projected = sized(projected, n * h);
        let gate = sized(gate, n * inter);

        for (row, &token) in x.chunks_exact_mut(h).zip(&all_tokens) {
            self.embed(token as usize, row);
        }
        let half_rope = cfg.rope_dim / 2;
        let theta_scale = cfg.rope_theta.powf(-2.0 / cfg.rope_dim as f32);
        rope.clear();
        rows.clear();
        for (s, span) in spans.iter().enumerate() {
            for pos in span.start_pos..span.start_pos + span.len {
                let at = rope.len();
                rope.resize(at + half_rope, (0.0, 0.0));
                math::rope_cache(pos, theta_scale, &self.rope_freq_factors, &mut rope[at..]);
                // llama.cpp sums a prompt's products in another order than a single token's.
                let order = ProductOrder::for_position(pos, span.prompt_len, cfg.head_dim);
                rows.push(RowPlace { seq: s, pos, order });
            }
        }

        let order = self.products;
        for (layer, block) in self.blocks.iter().enumerate() {
            math::rms_norm_rows(x, &block.attn_norm, cfg.rms_norm_eps, normed);
            block
                .wqkv
                .matmul_in(order, normed, &mut [&mut *q, &mut *k, &mut *v])?;
            for (row, cache) in rope.chunks_exact(half_rope.max(1)).enumerate().take(n) {
                math::rope_rows(&mut q[row * h..(row + 1) * h], cfg.head_dim, cache);
                math::rope_rows(&mut k[row * kvw..(row + 1) * kvw], cfg.head_dim, cache);
            }
            for (seq, span) in batch.iter_mut().zip(&spans) {
                let rows = span.row * kvw..(span.row + span.len) * kvw;
                seq.kv
                    .write(layer, span.start_pos, &k[rows.clone()], &v[rows]);
            }
            self.attention(batch, rows, layer, q, attn);
            block.wo.matmul_in(order, attn, projected)?;
            math::add_assign(x, projected);

            math::rms_norm_rows(x, &block.ffn_norm, cfg.rms_norm_eps, normed);
            block.w_gate_up.forward_in(order, normed, gate)?;
            block.w_down.matmul_in(order, gate, projected)?;
            math::add_assign(x, projected);
        }
        for seq in batch.iter_mut() {
            seq.kv.advance(seq.tokens.len());
        }

        // Only the last position of each sequence needs logits.
        let mut last = vec![0f32; spans.len() * h];
        for (i, span) in spans.iter().enumerate() {
            let row = span.row + span.len - 1;
            math::rms_norm_rows(
                &x[row * h..(row + 1) * h],
                &self.output_norm,
                cfg.rms_norm_eps,
                &mut last[i * h..(i + 1) * h],
            );
        }
        let out = logits.reset(spans.len(), cfg.vocab_size);
        self.output.matmul_in(order, &last, out)
    }

    /// Writes token `token`'s embedding into `out`.
    fn embed(&self, token: usize, out: &mut [f32]) {
        match &self.embeddings {
            Embeddings::Quantized(matrix) => {
                matrix.dequantize_row(token, out);
            }
            Embeddings::Dense(table) => {
                let h = out.len();
                out.copy_from_slice(&table[token * h..(token + 1) * h]);
            }
        }
    }

    /// Causal attention of every new token over its own sequence's cache.
    fn attention(
        &self,
        batch: &[SeqStep<'_>],
        rows: &[RowPlace],
        layer: usize,
        q: &[f32],
        out: &mut [f32],
    ) {
        let cfg = &self.config;
        let scale = 1.0 / (cfg.head_dim as f32).sqrt();
        let geometry = AttentionGeometry {
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            scale,
        };
        thread_local! {
            static SCRATCH: RefCell<AttentionScratch> = RefCell::default();
        }
        let pool = Pool::global();
        // A step of many tokens takes one task per token: each task reads its cache rows
        // whole (every key/value head's part of a row is adjacent), where a task per head
        // would split each row between the threads. A step of fewer tokens takes one task
        // per key/value head, whose query heads share each widened cache row; and a step of
        // one or two tokens, which has too few of those to keep every thread busy (three
        // key/value heads on two threads leave one idle a third of the time), one task per
        // query head. The numbers are the same either way: each head's scores, softmax and
        // sums are its own.
        let (task_heads, task_geometry) = if rows.len() >= TOKENS_PER_THREAD * pool.threads() {
            (1, geometry)
        } else if rows.len() * cfg.num_kv_heads >= 4 * pool.threads() {
            (cfg.num_kv_heads, geometry)
        } else {
            let one_head = AttentionGeometry {
                num_heads: cfg.num_kv_heads,
                ..geometry
            };
            (cfg.num_heads, one_head)
        };
        // Each task runs its heads a key/value head's group at a time.
        let group = cfg.num_heads / cfg.num_kv_heads;
        let heads_per_task = cfg.num_heads / task_heads;
        let heads_per_run = heads_per_task.min(group);
        let (task_width, run_width) = (heads_per_task * cfg.head_dim, heads_per_run * cfg.head_dim);
        pool.for_each_chunk_mut(out, task_width, |task, out_heads| {
            let place = &rows[task / task_heads];
            let first_head = task % task_heads * heads_per_task;
            let queries = &q[task * task_width..(task + 1) * task_width];
            let attend = if self.online_softmax {
                attend_row_online
            } else {
                attend_row
            };
            let runs = out_heads
                .chunks_exact_mut(run_width)
                .zip(queries.chunks_exact(run_width));
            for (i, (out_run, queries)) in runs.enumerate() {
                let run = AttentionTask {
                    order: place.order,
                    kv_head: (first_head + i * heads_per_run) / group,
                    queries,
                    kv: batch[place.seq].kv.view(layer),
                    len: place.pos + 1,
                    whole_rows: i == 0 && heads_per_task == cfg.num_heads,
                };
                SCRATCH.with_borrow_mut(|scratch| {
                    attend(&task_geometry, &run, out_run, scratch);
                });
            }
        });
    }
}

/// Tokens per thread from which a step's attention takes one task per token (see
/// `LlamaModel::attention`).
const TOKENS_PER_THREAD: usize = 4;

/// Where a packed row's token belongs: its sequence, position and product order.
struct RowPlace {
    seq: usize,
    pos: usize,
    order: ProductOrder,
}

/// The buffers of a step, kept by the model between steps so that decoding does not
/// allocate them anew each time. Every step overwrites what it reads.
#[derive(Default)]
struct StepBuffers {
    x: Vec<f32>,
    normed: Vec<f32>,
    attn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    projected: Vec<f32>,
    gate: Vec<f32>,
    /// Rotary cosines and sines, `rope_dim / 2` pairs per packed row.
    rope: Vec<(f32, f32)>,
    rows: Vec<RowPlace>,
}

/// The first `len` values of `buffer`, grown (never shrunk) to hold them.
fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// Where a sequence's new tokens sit in the packed batch.
struct Span {
    row: usize,
    len: usize,
    start_pos: usize,
    prompt_len: usize,
}

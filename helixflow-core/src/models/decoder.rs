//! The pre-norm transformer decoder that every family here assembles: token embedding, then
//! per block attention and a gated feed-forward network, each between a norm and a residual
//! add, then a final norm and the output projection.
//!
//! What differs between families is data, not code: [`DecoderConfig`] says which norm, which
//! rotary embedding per layer, whether queries and keys are normalised, whether the
//! projections have biases, whether each sublayer's output is normalised again before the
//! residual add (Gemma), the attention window per layer, the embedding scale, the query scale
//! and the final logit soft-cap. The family files read those from the GGUF metadata.
//!
//! Unlike `candle_transformers`' models, a [`Decoder`] keeps no state: the key/value cache of
//! every sequence is a [`SequenceKv`](crate::kv_cache::SequenceKv) owned by the caller, and
//! [`CausalLm::forward_into`] runs one *packed* step over several sequences at different
//! positions. The projections and the MLP run over all new tokens of all sequences at once;
//! rotary embedding, cache append and attention run per sequence.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use candle_core::Device;
use helixflow_kernels::math::GateActivation;
use helixflow_kernels::packed::Accumulation;
use helixflow_kernels::pool::Pool;

use super::feed_forward::{ExpertRouting, FeedForward};
use super::norm::Norm;
use super::rope::{Rope, RopeScaling, RopeStyle};
use super::tensors::TensorReader;
use super::{CausalLm, GgmlBuild, Logits, ModelShape, SeqStep};
use crate::cpu::attention::{AttentionScratch, AttentionTask, ProductOrder};
use crate::cpu::{
    attend_row, attend_row_online, math, AttentionGeometry, MatrixGroup, StepOrder, WeightMatrix,
    TILED_MIN_ROWS,
};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// Which normalisation the blocks use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// RMSNorm (every family here).
    Rms,
    /// LayerNorm, with a bias where the file has one.
    Layer,
}

/// The attention of one layer: its rotary embedding and its window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerAttention {
    /// Rotary base frequency.
    pub rope_base: f32,
    /// Rotary frequency scaling.
    pub rope_scaling: RopeScaling,
    /// Positions a token attends to, its own included (`None`: all before it).
    pub sliding_window: Option<usize>,
    /// Whether queries and keys are rotated at all (SmolLM3 leaves every fourth layer
    /// without position embedding).
    pub rotary: bool,
}

/// Hyper-parameters of a decoder, as a family file reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// The architecture name it was loaded as.
    pub architecture: String,
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
    /// Width of one head (`attention.key_length`, else hidden ÷ heads).
    pub head_dim: usize,
    /// The context length the model was trained for.
    pub context_length: usize,
    /// The norm of every block.
    pub norm: NormKind,
    /// Its epsilon.
    pub norm_eps: f32,
    /// The activation between the gate and up projections.
    pub activation: GateActivation,
    /// Which values of a head rotate together.
    pub rope_style: RopeStyle,
    /// Rotated values per head.
    pub rope_dim: usize,
    /// Per layer, its rotary embedding and attention window.
    pub layers: Vec<LayerAttention>,
    /// Each embedding is multiplied by this (Gemma: `√hidden`).
    pub embedding_scale: Option<f32>,
    /// Queries are multiplied by this after the rotary embedding and the scores are then not
    /// scaled (Gemma); `None`: scores are scaled by `1/√head_dim`.
    pub query_scale: Option<f32>,
    /// Attention scores are soft-capped at this before the softmax (Gemma 2).
    pub attention_softcap: Option<f32>,
    /// Logits are soft-capped at this (`tanh(x / cap) · cap`).
    pub final_logit_softcap: Option<f32>,
    /// Whether each head's queries and keys are RMS-normalised (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Whether the attention and MLP outputs are normalised again before the residual add
    /// (Gemma 2 and 3).
    pub post_norms: bool,
    /// The tensor of per-pair rotary frequency factors, where the file has it (Llama 3.1's
    /// `rope_freqs.weight`; Phi-3's long or short factors).
    pub rope_factors_tensor: &'static str,
    /// Where each block's MLP is a mixture of experts, how tokens are routed.
    pub experts: Option<ExpertRouting>,
}

impl DecoderConfig {
    /// Width of the query projection: `num_heads * head_dim`.
    pub fn q_width(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of the key (and value) projection: `num_kv_heads * head_dim`.
    pub fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Checks that the numbers are coherent before anything is sized by them.
    fn validate(&self, gguf: &GgufFile) -> Result<()> {
        let bad = |reason: String| Err(Error::invalid_file(gguf.path(), reason));
        if self.num_heads == 0 || self.num_kv_heads == 0 || self.head_dim == 0 {
            return bad("zero attention heads or head width".into());
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "{} query heads are not a multiple of {} key/value heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.rope_dim > self.head_dim || !self.rope_dim.is_multiple_of(2) {
            return bad(format!(
                "rotary dimension {} does not fit heads of {}",
                self.rope_dim, self.head_dim
            ));
        }
        if self.layers.len() != self.num_layers {
            return bad("one attention description per layer is needed".into());
        }
        check_block_count(gguf, self.num_layers)
    }
}

/// Each layer has several tensors: a block count the file cannot hold is a lie, caught before
/// anything is sized by it.
pub(crate) fn check_block_count(gguf: &GgufFile, num_layers: usize) -> Result<()> {
    if num_layers > gguf.tensor_infos().len() {
        return Err(Error::invalid_file(
            gguf.path(),
            format!(
                "block_count is {num_layers} but the file holds {} tensors",
                gguf.tensor_infos().len()
            ),
        ));
    }
    Ok(())
}

/// Reads the vocabulary size off the embedding: `token_embd.weight` is `[vocab, hidden]`.
pub(crate) fn embedding_rows(gguf: &GgufFile) -> Result<usize> {
    gguf.tensor_infos()
        .get("token_embd.weight")
        .map(|info| info.shape[0])
        .ok_or_else(|| Error::invalid_file(gguf.path(), "tensor token_embd.weight missing"))
}

/// One transformer block's weights.
struct Block {
    attn_norm: Norm,
    /// The query, key and value projections, which share their input.
    wqkv: MatrixGroup,
    /// Their biases, if the model has them.
    qkv_bias: Option<[Vec<f32>; 3]>,
    /// Per-head query and key norms.
    qk_norm: Option<[Norm; 2]>,
    wo: WeightMatrix,
    post_attn_norm: Option<Norm>,
    ffn_norm: Norm,
    ffn: FeedForward,
    post_ffn_norm: Option<Norm>,
    /// Index of the layer's rotary embedding in [`Decoder::ropes`], if it has one.
    rope: Option<usize>,
    window: Option<usize>,
}

/// The token embedding table: rows looked up straight from the quantised matrix where this
/// crate has its format (shared with the output projection when the model ties them), or
/// dequantised once otherwise.
enum Embeddings {
    Quantized(Arc<WeightMatrix>),
    Dense(Vec<f32>),
}

/// A decoder with weights in memory and no per-sequence state.
pub struct Decoder {
    config: DecoderConfig,
    shape: ModelShape,
    embeddings: Embeddings,
    blocks: Vec<Block>,
    output_norm: Norm,
    output: Arc<WeightMatrix>,
    /// The distinct rotary embeddings of the layers.
    ropes: Vec<Rope>,
    /// Whether attention runs with an online softmax ([`attend_row_online`]) rather than
    /// llama.cpp's two passes.
    online_softmax: bool,
    /// The order in which the packed matrix products add up ([`Accumulation`]).
    products: Accumulation,
    /// The llama.cpp build whose vector arithmetic attention and SiLU reproduce.
    build: GgmlBuild,
    buffers: Mutex<StepBuffers>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// Loads the weights a GGUF file holds for `config` onto the CPU.
    pub fn load(gguf: &GgufFile, config: DecoderConfig) -> Result<Self> {
        config.validate(gguf)?;
        let read = TensorReader {
            gguf,
            config: &config,
        };
        let h = config.hidden_size;
        let (qw, kvw, hd) = (config.q_width(), config.kv_width(), config.head_dim);

        let token_embd = Arc::new(read.matrix("token_embd.weight", config.vocab_size, h)?);
        let mut probe = vec![0f32; h];
        let embeddings = if token_embd.dequantize_row(0, &mut probe) {
            Embeddings::Quantized(token_embd.clone())
        } else {
            Embeddings::Dense(
                gguf.tensor("token_embd.weight", &Device::Cpu)?
                    .dequantize(&Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            )
        };
        let freq_factors = read.optional_vector(config.rope_factors_tensor, config.rope_dim / 2)?;
        let mut ropes: Vec<Rope> = Vec::new();
        let mut blocks = Vec::with_capacity(config.num_layers);
        for (l, attention) in config.layers.iter().enumerate() {
            let p = format!("blk.{l}");
            let rope = Rope::new(
                config.rope_style,
                config.rope_dim,
                attention.rope_base,
                attention.rope_scaling,
                freq_factors.clone(),
            );
            let rope = match ropes.iter().position(|r| *r == rope) {
                _ if !attention.rotary => None,
                Some(at) => Some(at),
                None => {
                    ropes.push(rope);
                    Some(ropes.len() - 1)
                }
            };
            let qkv_bias = match read.optional_vector(&format!("{p}.attn_q.bias"), qw)? {
                Some(q) => Some([
                    q,
                    read.vector(&format!("{p}.attn_k.bias"), kvw)?,
                    read.vector(&format!("{p}.attn_v.bias"), kvw)?,
                ]),
                None => None,
            };
            let qk_norm = if config.qk_norm {
                Some([
                    read.norm(&format!("{p}.attn_q_norm"), hd)?,
                    read.norm(&format!("{p}.attn_k_norm"), hd)?,
                ])
            } else {
                None
            };
            let post_norm = |name: &str| -> Result<Option<Norm>> {
                if config.post_norms {
                    read.norm(&format!("{p}.{name}"), h).map(Some)
                } else {
                    Ok(None)
                }
            };
            blocks.push(Block {
                attn_norm: read.norm(&format!("{p}.attn_norm"), h)?,
                wqkv: MatrixGroup::new(read.qkv(&p)?)?,
                qkv_bias,
                qk_norm,
                wo: read.matrix(&format!("{p}.attn_output.weight"), h, qw)?,
                post_attn_norm: post_norm("post_attention_norm")?,
                ffn_norm: read.norm(&format!("{p}.ffn_norm"), h)?,
                ffn: read.feed_forward(&p)?,
                post_ffn_norm: post_norm("post_ffw_norm")?,
                rope,
                window: attention.sliding_window,
            });
        }
        let output_norm = read.norm("output_norm", h)?;
        // Models with tied embeddings (SmolLM2, Gemma) have no separate output matrix.
        let output = if gguf.has_tensor("output.weight") {
            Arc::new(read.matrix("output.weight", config.vocab_size, h)?)
        } else {
            token_embd
        };
        let shape = ModelShape {
            architecture: config.architecture.clone(),
            vocab_size: config.vocab_size,
            context_length: config.context_length,
            num_layers: config.num_layers,
            kv_width: kvw,
            sliding_window: config.layers.iter().map(|l| l.sliding_window).collect(),
        };
        let mut decoder = Self {
            config,
            shape,
            embeddings,
            blocks,
            output_norm,
            output,
            ropes,
            online_softmax: std::env::var_os("HELIXFLOW_ONLINE_SOFTMAX").is_some_and(|v| v == "1"),
            products: Accumulation::from_env(),
            build: GgmlBuild::Avx2,
            buffers: Mutex::default(),
        };
        decoder.set_ggml_build(GgmlBuild::from_env());
        Ok(decoder)
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
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
        let (h, qw, kvw) = (cfg.hidden_size, cfg.q_width(), cfg.kv_width());

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
            ropes,
            rows,
            tiled_rows,
            row_sequences,
        } = buffers;
        let x = sized(x, n * h);
        let normed = sized(normed, n * h);
        let attn = sized(attn, n * qw);
        let (q, k, v) = (sized(q, n * qw), sized(k, n * kvw), sized(v, n * kvw));
        let projected = sized(projected, n * h);

        for (row, &token) in x.chunks_exact_mut(h).zip(&all_tokens) {
            self.embed(token as usize, row);
        }
        if let Some(factor) = cfg.embedding_scale {
            math::scale(x, factor);
        }
        ropes.resize_with(self.ropes.len(), Vec::new);
        for (rope, cache) in self.ropes.iter().zip(ropes.iter_mut()) {
            cache.clear();
            cache.resize(n * rope.pairs(), (0.0, 0.0));
            let mut slots = cache.chunks_exact_mut(rope.pairs().max(1));
            for span in &spans {
                for pos in span.start_pos..span.start_pos + span.len {
                    if let Some(slot) = slots.next() {
                        rope.fill_cache(pos, slot);
                    }
                }
            }
        }
        rows.clear();
        tiled_rows.clear();
        row_sequences.clear();
        for (s, span) in spans.iter().enumerate() {
            for pos in span.start_pos..span.start_pos + span.len {
                // llama.cpp sums a prompt's products in another order than a single token's.
                let order =
                    ProductOrder::for_position(pos, span.prompt_len, cfg.head_dim, self.build);
                rows.push(RowPlace { seq: s, pos, order });
                tiled_rows.push(pos < span.prompt_len && span.prompt_len >= TILED_MIN_ROWS);
                row_sequences.push(s as u32);
            }
        }

        let order = StepOrder {
            packed: self.products,
            tiled_rows,
            row_sequences,
        };
        let last_layer = self.blocks.len() - 1;
        let mut active = n;
        for (layer, block) in self.blocks.iter().enumerate() {
            block.attn_norm.forward(x, normed);
            block
                .wqkv
                .matmul_in(order, normed, &mut [&mut *q, &mut *k, &mut *v])?;
            if let Some([bq, bk, bv]) = &block.qkv_bias {
                add_rows(q, bq);
                add_rows(k, bk);
                add_rows(v, bv);
            }
            if let Some([q_norm, k_norm]) = &block.qk_norm {
                // Through `attn`, free until attention writes it.
                q_norm.forward(q, attn);
                q.copy_from_slice(attn);
                let keys = &mut attn[..n * kvw];
                k_norm.forward(k, keys);
                k.copy_from_slice(keys);
            }
            if let Some(index) = block.rope {
                let rope = &self.ropes[index];
                let pairs = rope.pairs().max(1);
                for (row, cache) in ropes[index].chunks_exact(pairs).enumerate().take(n) {
                    rope.apply(&mut q[row * qw..(row + 1) * qw], cfg.head_dim, cache);
                    rope.apply(&mut k[row * kvw..(row + 1) * kvw], cfg.head_dim, cache);
                }
            }
            if let Some(factor) = cfg.query_scale {
                math::scale(q, factor);
            }
            for (seq, span) in batch.iter_mut().zip(&spans) {
                let rows = span.row * kvw..(span.row + span.len) * kvw;
                seq.kv
                    .write(layer, span.start_pos, &k[rows.clone()], &v[rows]);
            }
            self.attention(batch, rows, layer, block.window, q, attn);
            block.wo.matmul_in(order, attn, projected)?;
            residual_add(x, projected, block.post_attn_norm.as_ref(), normed);

            let mut ffn_order = order;
            if layer == last_layer {
                // Only the last position of each sequence needs logits, and llama.cpp runs
                // the last feed-forward on those rows alone, one per sequence, in the
                // single-row order.
                for (i, span) in spans.iter().enumerate() {
                    let row = span.row + span.len - 1;
                    x.copy_within(row * h..(row + 1) * h, i * h);
                }
                active = spans.len();
                ffn_order = order.untiled();
            }
            let (x, normed, projected) = (
                &mut x[..active * h],
                &mut normed[..active * h],
                &mut projected[..active * h],
            );
            block.ffn_norm.forward(x, normed);
            block
                .ffn
                .forward(ffn_order, self.build, normed, gate, projected)?;
            residual_add(x, projected, block.post_ffn_norm.as_ref(), normed);
        }
        for seq in batch.iter_mut() {
            seq.kv.advance(seq.tokens.len());
        }

        // The last layer left one row per sequence, its last position.
        let last = &mut normed[..spans.len() * h];
        self.output_norm.forward(&x[..spans.len() * h], last);
        let out = logits.reset(spans.len(), cfg.vocab_size);
        self.output.matmul_in(order.untiled(), last, out)?;
        if let Some(cap) = cfg.final_logit_softcap {
            math::soft_cap(out, cap);
        }
        Ok(())
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

    /// Causal attention of every new token over its own sequence's cache, within `window`
    /// positions when the layer has one.
    fn attention(
        &self,
        batch: &[SeqStep<'_>],
        rows: &[RowPlace],
        layer: usize,
        window: Option<usize>,
        q: &[f32],
        out: &mut [f32],
    ) {
        let cfg = &self.config;
        let scale = match cfg.query_scale {
            Some(_) => 1.0,
            None => 1.0 / (cfg.head_dim as f32).sqrt(),
        };
        let geometry = AttentionGeometry {
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            scale,
            soft_cap: cfg.attention_softcap,
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
            // Positions before the window are hidden from the token.
            let first_visible = window.map_or(0, |w| (place.pos + 1).saturating_sub(w));
            let runs = out_heads
                .chunks_exact_mut(run_width)
                .zip(queries.chunks_exact(run_width));
            for (i, (out_run, queries)) in runs.enumerate() {
                let run = AttentionTask {
                    order: place.order,
                    kv_head: (first_head + i * heads_per_run) / group,
                    queries,
                    kv: batch[place.seq].kv.view(layer).starting_at(first_visible),
                    len: place.pos + 1 - first_visible,
                    whole_rows: i == 0 && heads_per_task == cfg.num_heads,
                };
                SCRATCH.with_borrow_mut(|scratch| {
                    attend(&task_geometry, &run, out_run, scratch);
                });
            }
        });
    }
}

impl CausalLm for Decoder {
    fn shape(&self) -> &ModelShape {
        &self.shape
    }

    fn forward_into(&self, batch: &mut [SeqStep<'_>], logits: &mut Logits) -> Result<()> {
        let result = self.forward_packed(batch, logits);
        if result.is_err() {
            // Leave every cache as it was: no half-written layers, no blocks held for nothing.
            for seq in batch.iter_mut() {
                seq.kv.release_unused();
            }
        }
        result
    }

    fn products(&self) -> Accumulation {
        self.products
    }

    fn set_products(&mut self, order: Accumulation) {
        self.products = order;
    }

    fn set_online_softmax(&mut self, on: bool) {
        self.online_softmax = on;
    }

    fn ggml_build(&self) -> GgmlBuild {
        self.build
    }

    fn set_ggml_build(&mut self, build: GgmlBuild) {
        self.build = build;
        for block in &mut self.blocks {
            block.ffn.set_build(build);
        }
    }
}

/// `x += sublayer`, normalised first by `post_norm` (into `scratch`) when the model has one.
fn residual_add(x: &mut [f32], sublayer: &[f32], post_norm: Option<&Norm>, scratch: &mut [f32]) {
    match post_norm {
        Some(norm) => {
            norm.forward(sublayer, scratch);
            math::add_assign(x, scratch);
        }
        None => math::add_assign(x, sublayer),
    }
}

/// Adds `bias` to every row of `rows`.
fn add_rows(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        math::add_assign(row, bias);
    }
}

/// Tokens per thread from which a step's attention takes one task per token (see
/// `Decoder::attention`).
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
    /// Per rotary embedding, its cosines and sines: one position's pairs per packed row.
    ropes: Vec<Vec<(f32, f32)>>,
    rows: Vec<RowPlace>,
    /// Per packed row, whether its K-quant products take the batched order.
    tiled_rows: Vec<bool>,
    /// Per packed row, its sequence's index in the step.
    row_sequences: Vec<u32>,
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

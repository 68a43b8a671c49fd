//! Causal language models behind one contract, [`CausalLm`], which is all the engine, the
//! one-shot generation path and the front ends know of a model.
//!
//! - [`decoder`]: the pre-norm transformer decoder every family here assembles, over the
//!   building blocks of [`rope`] and [`norm`] and the kernels of [`crate::cpu`];
//! - [`feed_forward`]: a block's gated MLP, or its mixture of experts;
//! - one file per architecture family ([`llama`], [`qwen2`], [`qwen3`], [`qwen3moe`],
//!   [`gemma2`], [`gemma3`], [`phi3`], [`smollm3`]) that reads
//!   its hyper-parameters from GGUF metadata and says which blocks it uses;
//! - [`registry`]: from a GGUF's `general.architecture` to its family's loader.
//!
//! The arithmetic is llama.cpp's (see [`crate::cpu`]): greedy decoding reproduces its tokens.

pub mod decoder;
pub mod feed_forward;
pub mod gemma2;
pub mod gemma3;
pub mod hf;
mod hparams;
pub mod llama;
pub mod logits;
pub mod norm;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
pub mod qwen3moe;
pub mod registry;
pub mod rope;
pub mod router;
pub mod smollm3;
mod tensors;

pub use decoder::{Decoder, DecoderConfig};
pub use hf::{import as import_hf_folder, is_hf_folder, LoadQuantization};
pub use logits::Logits;
pub use registry::{architectures, load_gguf, model_types};

use helixflow_kernels::packed::Accumulation;
pub use helixflow_kernels::reference::GgmlBuild;

use crate::error::{Error, Result};
use crate::kv_cache::{BlockLayout, KvPool, SequenceKv};

/// Positions per KV block for caches made by [`CausalLm::new_kv_state`].
pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// One sequence's part of a packed forward step.
pub struct SeqStep<'a> {
    /// The new tokens; their positions continue from `kv.len()`.
    pub tokens: &'a [u32],
    /// The sequence's cache; the new tokens are appended to it.
    pub kv: &'a mut SequenceKv,
    /// Length of the sequence's prompt. Prompt positions are computed in llama.cpp's
    /// prompt-batch order and later positions in its single-token order (see
    /// [`crate::cpu::attention::ProductOrder`]), so a token's numbers depend only on its
    /// role, never on how the scheduler chunked or batched it.
    pub prompt_len: usize,
}

/// What the engine needs to know of a model to schedule it and size its cache.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelShape {
    /// The GGUF `general.architecture` (or Hugging Face `model_type`) it was loaded as.
    pub architecture: String,
    /// Vocabulary size (rows of the embedding, columns of the logits).
    pub vocab_size: usize,
    /// The context length the model was trained for.
    pub context_length: usize,
    /// Transformer blocks, each with its own KV cache layer.
    pub num_layers: usize,
    /// Values per position of each layer's keys (and of its values).
    pub kv_width: usize,
    /// Per layer, the attention window in positions (`None`: the whole context).
    pub sliding_window: Vec<Option<usize>>,
}

/// A causal language model with weights in memory and no per-sequence state: the key/value
/// cache of every sequence is a [`SequenceKv`] owned by the caller.
pub trait CausalLm: Send + Sync + std::fmt::Debug {
    /// The model's shape.
    fn shape(&self) -> &ModelShape;

    /// Runs one packed step: appends every sequence's new tokens to its cache and writes, per
    /// sequence, the logits of its last new token into `logits` (row `i` for `batch[i]`),
    /// whose buffer a decode loop keeps from step to step.
    ///
    /// Sequences may be at different positions and have different numbers of new tokens
    /// (prefill chunks and single decode tokens mix freely). On error every cache is left as
    /// it was.
    fn forward_into(&self, batch: &mut [SeqStep<'_>], logits: &mut Logits) -> Result<()>;

    /// The order the packed matrix products add up in.
    fn products(&self) -> Accumulation;

    /// Adds up the packed matrix products (`Q4_0`, `Q4_1` and `Q8_0` weights on x86 with
    /// AVX2) in the order `order`. [`Accumulation::Blocks`] makes batched decoding and prefill
    /// about 1.5 times as fast, at the price of llama.cpp's last bits. [`Accumulation::Ggml`]
    /// by default; `HELIXFLOW_BLOCK_PRODUCTS=1` asks for block order at load.
    fn set_products(&mut self, order: Accumulation);

    /// Runs attention with an online softmax (one pass over the cached keys and values per
    /// token), at the price of llama.cpp's last bits. Off by default;
    /// `HELIXFLOW_ONLINE_SOFTMAX=1` turns it on at load.
    fn set_online_softmax(&mut self, on: bool);

    /// The llama.cpp build whose vector arithmetic the model reproduces.
    fn ggml_build(&self) -> GgmlBuild;

    /// Reproduces the arithmetic of llama.cpp built as `build` where it depends on the
    /// build's vector width (attention's sums, softmax, SiLU; see [`GgmlBuild`]), to match
    /// reference outputs of that build bit for bit. [`GgmlBuild::Avx2`] by default;
    /// `HELIXFLOW_GGML_BUILD=avx512` asks for the other at load. Either runs on any CPU.
    fn set_ggml_build(&mut self, build: GgmlBuild);

    /// [`Self::forward_into`] into fresh rows, one per sequence.
    fn forward(&self, batch: &mut [SeqStep<'_>]) -> Result<Vec<Vec<f32>>> {
        let mut logits = Logits::new();
        self.forward_into(batch, &mut logits)?;
        Ok(logits.to_rows())
    }

    /// The shape of this model's KV cache blocks of `block_size` positions.
    fn block_layout(&self, block_size: usize) -> BlockLayout {
        let shape = self.shape();
        BlockLayout {
            block_size,
            num_layers: shape.num_layers,
            kv_width: shape.kv_width,
        }
    }

    /// A fresh, empty cache for one sequence run on its own, with a pool of its own.
    fn new_kv_state(&self) -> SequenceKv {
        SequenceKv::new(KvPool::unbounded(self.block_layout(DEFAULT_BLOCK_SIZE)))
    }

    /// Whether one sequence can take a step of `tokens` after `cached` positions: tokens in
    /// the vocabulary, positions within the context. What fails here belongs to that sequence
    /// alone; an engine checks it before batching the sequence with others.
    fn check_step(&self, tokens: &[u32], cached: usize) -> Result<()> {
        let shape = self.shape();
        if tokens.is_empty() {
            return Err(Error::InvalidRequest(
                "a sequence step has no tokens".into(),
            ));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= shape.vocab_size) {
            return Err(Error::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                shape.vocab_size
            )));
        }
        let end = cached.saturating_add(tokens.len());
        if end > shape.context_length {
            return Err(Error::ContextOverflow {
                prompt_tokens: cached,
                max_tokens: tokens.len(),
                context: shape.context_length,
            });
        }
        Ok(())
    }
}

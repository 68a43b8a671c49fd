//! Starting the engine and talking to it.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use super::config::EngineConfig;
use super::policy::{FcfsPolicy, SchedulingPolicy};
use super::request::{request_channel, RequestStream};
use super::stats::{EngineStats, StatsCell};
use super::worker::{Submission, Worker};
use crate::chat_model::ChatModel;
use crate::generation::GenerationParams;
use crate::kv_cache::KvPool;
use crate::{Error, Result};

/// Starts engines.
#[derive(Debug)]
pub struct Engine;

impl Engine {
    /// Starts an engine for `model` with the first-come-first-served policy.
    pub fn start(model: Arc<ChatModel>, config: EngineConfig) -> Result<EngineHandle> {
        Self::start_with_policy(model, config, Box::new(FcfsPolicy))
    }

    /// Starts an engine with a scheduling policy of the caller's choice. Returns once the
    /// engine thread is running (or with the reason it could not start).
    pub fn start_with_policy(
        model: Arc<ChatModel>,
        config: EngineConfig,
        policy: Box<dyn SchedulingPolicy>,
    ) -> Result<EngineHandle> {
        config.validate()?;
        let layout = model.model().block_layout(config.block_size);
        let pool = KvPool::with_budget(layout, config.kv_budget_bytes()?);
        let (tx, rx) = sync_channel(config.queue_capacity);
        let stats = Arc::new(StatsCell::default());
        let (ready_tx, ready_rx) = sync_channel::<Result<()>>(1);
        let worker = Worker::new(
            model.clone(),
            config.clone(),
            pool.clone(),
            policy,
            stats.clone(),
        );
        std::thread::Builder::new()
            .name("helixflow-engine".into())
            .spawn(move || {
                let _ = ready_tx.send(Ok(()));
                worker.run(rx);
            })
            .map_err(|e| Error::io("engine thread", e))?;
        ready_rx.recv().map_err(|_| Error::EngineStopped)??;
        Ok(EngineHandle {
            inner: Arc::new(HandleInner {
                submissions: tx,
                stats,
                model,
                pool,
                config,
            }),
        })
    }
}

/// A clonable handle to a running engine. The engine stops when every handle is dropped and
/// its last request is done.
#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    submissions: SyncSender<Submission>,
    stats: Arc<StatsCell>,
    model: Arc<ChatModel>,
    pool: KvPool,
    config: EngineConfig,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("model", &self.inner.model.name())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl EngineHandle {
    /// The model the engine serves.
    pub fn model(&self) -> &Arc<ChatModel> {
        &self.inner.model
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Current queue, batch, KV and throughput figures.
    pub fn stats(&self) -> EngineStats {
        let mut stats = self.inner.stats.read();
        let pool = self.inner.pool.stats();
        // Cached blocks that no sequence uses count as free, as they are evicted on demand.
        let evictable = stats.kv_blocks_evictable.min(pool.used);
        stats.kv_blocks_total = pool.capacity;
        stats.kv_blocks_used = pool.used - evictable;
        stats.kv_blocks_free = pool.free + evictable;
        stats
    }

    /// Queues generation from prompt token ids (choice `i` samples with
    /// `choice_seed(params.sampling.seed, i)`). Fails at once, without queueing, when a
    /// prompt id is outside the vocabulary, when the parameters are invalid, when the request could never fit the context or the KV pool,
    /// or with [`Error::Overloaded`] when the queue is full.
    pub fn submit(&self, prompt: Vec<u32>, params: GenerationParams) -> Result<RequestStream> {
        let model = self.inner.model.model();
        if prompt.is_empty() {
            return Err(Error::InvalidRequest("the prompt is empty".into()));
        }
        // Checked here: inside a step, a bad id would fail every request batched with it.
        let vocab = model.shape().vocab_size;
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of {vocab} tokens"
            )));
        }
        params.validate(vocab)?;
        let max_tokens = params.token_budget(prompt.len(), model.shape().context_length)?;
        let bs = self.inner.config.block_size;
        // The first choice holds the prompt and its tokens, every other choice its own tail
        // plus a copy of the prompt's last, shared block.
        let blocks = (prompt.len() + max_tokens).div_ceil(bs)
            + (params.n - 1) * (max_tokens.div_ceil(bs) + 1);
        let capacity = self.inner.pool.stats().capacity;
        if blocks > capacity {
            return Err(Error::InvalidRequest(format!(
                "the request needs {blocks} KV blocks of {bs} positions and the cache has {capacity}"
            )));
        }
        let (sink, stream) = request_channel();
        let submission = Submission {
            prompt,
            params,
            max_tokens,
            sink,
        };
        match self.inner.submissions.try_send(submission) {
            Ok(()) => Ok(stream),
            Err(TrySendError::Full(_)) => {
                // A retry waits behind the whole queue: tell it how long the queue takes
                // to drain at the rate requests have been ending.
                let queued = self.inner.config.queue_capacity;
                Err(Error::Overloaded {
                    queued,
                    retry_after_secs: self.inner.stats.retry_after_secs(queued),
                })
            }
            Err(TrySendError::Disconnected(_)) => Err(Error::EngineStopped),
        }
    }
}

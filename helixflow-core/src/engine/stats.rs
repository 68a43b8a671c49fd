//! Counters the engine publishes for monitoring.

use std::sync::Mutex;

/// A snapshot of the engine's state and counters.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct EngineStats {
    /// Requests waiting to be admitted.
    pub waiting_requests: usize,
    /// Requests admitted and not finished.
    pub running_requests: usize,
    /// Sequences (choices) running.
    pub running_seqs: usize,
    /// KV blocks the budget allows.
    pub kv_blocks_total: usize,
    /// KV blocks in use by sequences.
    pub kv_blocks_used: usize,
    /// KV blocks free, counting cached blocks no sequence uses (they are evicted on demand).
    pub kv_blocks_free: usize,
    /// KV blocks held by the prefix cache (some may also be in use by sequences).
    pub kv_blocks_cached: usize,
    /// Cached blocks that no sequence uses.
    pub kv_blocks_evictable: usize,
    /// Prompt blocks reused from the prefix cache so far.
    pub prefix_cache_hits: u64,
    /// Steps run so far.
    pub steps: u64,
    /// Tokens computed (prompt and generated) over all steps.
    pub tokens_computed: u64,
    /// Tokens generated over all steps.
    pub tokens_generated: u64,
    /// Prompt tokens computed over all steps (prefill, including recomputation).
    pub prefill_tokens: u64,
    /// Sequences in the last step's batch.
    pub last_batch_seqs: usize,
    /// Tokens in the last step's batch.
    pub last_batch_tokens: usize,
    /// The most sequences any step has batched together.
    pub max_batch_seqs: usize,
    /// Times a request was preempted for lack of KV blocks.
    pub preemptions: u64,
    /// Requests finished (all choices done).
    pub finished_requests: u64,
    /// Requests cancelled by their caller.
    pub cancelled_requests: u64,
}

/// The shared cell the worker writes and handles read.
#[derive(Debug, Default)]
pub(crate) struct StatsCell(Mutex<EngineStats>);

impl StatsCell {
    pub(crate) fn read(&self) -> EngineStats {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut EngineStats)) {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

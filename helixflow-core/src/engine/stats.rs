//! Counters the engine publishes for monitoring.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// How far back request completions count towards the drain rate.
const DRAIN_WINDOW: Duration = Duration::from_secs(60);
/// The most completions remembered for it.
const DRAIN_SAMPLES: usize = 256;
/// The longest wait a refused client is told to make.
pub(crate) const MAX_RETRY_AFTER_SECS: u64 = 60;
/// The wait suggested while no request has ended within the window.
const UNKNOWN_RETRY_AFTER_SECS: u64 = 10;

/// The shared cell the worker writes and handles read.
#[derive(Debug, Default)]
pub(crate) struct StatsCell {
    stats: Mutex<EngineStats>,
    /// When recent requests left the engine (finished, failed or cancelled).
    ended: Mutex<VecDeque<Instant>>,
}

impl StatsCell {
    pub(crate) fn read(&self) -> EngineStats {
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut EngineStats)) {
        f(&mut self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// Notes that `count` requests left the engine now.
    pub(crate) fn ended(&self, count: usize) {
        let mut ended = self
            .ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        for _ in 0..count.min(DRAIN_SAMPLES) {
            if ended.len() == DRAIN_SAMPLES {
                ended.pop_front();
            }
            ended.push_back(now);
        }
    }

    /// Seconds until `ahead` requests will have left the engine at the rate requests left
    /// it over the last minute (1 to [`MAX_RETRY_AFTER_SECS`]; 10 while none has).
    pub(crate) fn retry_after_secs(&self, ahead: usize) -> u64 {
        let mut ended = self
            .ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        while ended
            .front()
            .is_some_and(|&t| now.duration_since(t) > DRAIN_WINDOW)
        {
            ended.pop_front();
        }
        let Some(&oldest) = ended.front() else {
            return UNKNOWN_RETRY_AFTER_SECS;
        };
        let span = now.duration_since(oldest).max(Duration::from_secs(1));
        let per_second = ended.len() as f64 / span.as_secs_f64();
        let wait = (ahead.max(1) as f64 / per_second).ceil() as u64;
        wait.clamp(1, MAX_RETRY_AFTER_SECS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_follows_the_drain_rate() {
        let cell = StatsCell::default();
        assert_eq!(cell.retry_after_secs(8), UNKNOWN_RETRY_AFTER_SECS);
        // 100 requests ended within (at most) a second: 8 ahead drain within a second.
        cell.ended(100);
        assert_eq!(cell.retry_after_secs(8), 1);
        // Ten thousand ahead at about 100 a second: past the cap.
        assert_eq!(cell.retry_after_secs(10_000), MAX_RETRY_AFTER_SECS);
        // At 100 a second, 1,000 ahead take about 10 s.
        assert_eq!(cell.retry_after_secs(1_000), 10);
    }
}

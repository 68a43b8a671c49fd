//! Scheduling policies: which requests to admit, how many tokens each sequence computes in a
//! step, and whom to preempt when KV blocks run out.

/// A request waiting for admission, as a policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitingRequest {
    /// Arrival order (smaller is older).
    pub arrival: u64,
    /// Sequences it will run (its choices).
    pub seqs: usize,
    /// KV blocks its pending prompt needs.
    pub blocks_needed: usize,
}

/// A running sequence, as a policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningSeq {
    /// Arrival order of its request.
    pub arrival: u64,
    /// Tokens not yet in its cache: 1 for a decode, more while its prompt is prefilled.
    pub pending: usize,
}

/// The decisions of the engine loop that a deployment may want to change.
pub trait SchedulingPolicy: Send {
    /// How many requests from the front of `waiting` (oldest first) to admit now, given the
    /// sequences already running and the free KV blocks.
    fn admit(
        &mut self,
        waiting: &[WaitingRequest],
        running_seqs: usize,
        max_num_seqs: usize,
        free_blocks: usize,
    ) -> usize;

    /// Tokens each running sequence computes this step (0 for none), in total at most
    /// `max_batched_tokens`. A sequence with prompt left may get a chunk of it.
    fn plan_step(&mut self, running: &[RunningSeq], max_batched_tokens: usize) -> Vec<usize>;

    /// The arrival number of the request to preempt when the planned step needs more KV
    /// blocks than are free, or `None` to fail instead.
    fn preempt(&mut self, running: &[RunningSeq]) -> Option<u64>;
}

/// First come, first served: admission in arrival order while blocks and sequence slots
/// last; running decodes before prompt chunks (so a long prompt does not stall streams);
/// the newest request preempted first.
#[derive(Debug, Default, Clone, Copy)]
pub struct FcfsPolicy;

impl SchedulingPolicy for FcfsPolicy {
    fn admit(
        &mut self,
        waiting: &[WaitingRequest],
        running_seqs: usize,
        max_num_seqs: usize,
        free_blocks: usize,
    ) -> usize {
        let (mut seqs, mut blocks, mut admitted) = (running_seqs, 0, 0);
        for request in waiting {
            if seqs + request.seqs > max_num_seqs || blocks + request.blocks_needed > free_blocks {
                break;
            }
            seqs += request.seqs;
            blocks += request.blocks_needed;
            admitted += 1;
        }
        // Nothing running: admit the oldest anyway, chunked prefill lets it start small.
        if admitted == 0 && running_seqs == 0 && !waiting.is_empty() {
            admitted = 1;
        }
        admitted
    }

    fn plan_step(&mut self, running: &[RunningSeq], max_batched_tokens: usize) -> Vec<usize> {
        let mut plan = vec![0; running.len()];
        let mut budget = max_batched_tokens;
        let mut order: Vec<usize> = (0..running.len()).collect();
        order.sort_by_key(|&i| running[i].arrival);
        // Decodes first, oldest first.
        for &i in &order {
            if running[i].pending == 1 && budget > 0 {
                plan[i] = 1;
                budget -= 1;
            }
        }
        // Then prompt chunks, oldest first.
        for &i in &order {
            if running[i].pending > 1 && budget > 0 {
                plan[i] = running[i].pending.min(budget);
                budget -= plan[i];
            }
        }
        plan
    }

    fn preempt(&mut self, running: &[RunningSeq]) -> Option<u64> {
        let newest = running.iter().map(|s| s.arrival).max()?;
        let oldest = running.iter().map(|s| s.arrival).min()?;
        // The oldest request is never preempted in its own favour.
        (newest != oldest).then_some(newest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(arrival: u64, pending: usize) -> RunningSeq {
        RunningSeq { arrival, pending }
    }

    #[test]
    fn decodes_come_before_prompt_chunks_and_chunks_fill_the_budget() {
        let running = [seq(0, 300), seq(1, 1), seq(2, 1), seq(3, 50)];
        assert_eq!(FcfsPolicy.plan_step(&running, 100), vec![98, 1, 1, 0]);
        assert_eq!(FcfsPolicy.plan_step(&running, 2), vec![0, 1, 1, 0]);
    }

    #[test]
    fn admission_stops_at_the_first_request_that_does_not_fit() {
        let waiting = [
            WaitingRequest {
                arrival: 1,
                seqs: 1,
                blocks_needed: 4,
            },
            WaitingRequest {
                arrival: 2,
                seqs: 1,
                blocks_needed: 10,
            },
            WaitingRequest {
                arrival: 3,
                seqs: 1,
                blocks_needed: 1,
            },
        ];
        assert_eq!(FcfsPolicy.admit(&waiting, 0, 8, 8), 1);
        assert_eq!(FcfsPolicy.admit(&waiting, 7, 8, 100), 1);
        // An idle engine always takes the oldest request.
        assert_eq!(FcfsPolicy.admit(&waiting[1..], 0, 8, 2), 1);
    }

    #[test]
    fn the_newest_request_is_preempted_but_never_the_only_one() {
        assert_eq!(
            FcfsPolicy.preempt(&[seq(4, 1), seq(9, 1), seq(9, 1)]),
            Some(9)
        );
        assert_eq!(FcfsPolicy.preempt(&[seq(4, 1), seq(4, 1)]), None);
    }
}

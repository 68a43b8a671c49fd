//! Grouping inputs of different lengths into forward passes.

/// The most sequences in one forward pass.
pub(crate) const MAX_BATCH_SEQUENCES: usize = 32;

/// The most padded tokens (sequences x longest length) in one forward pass; bounds the memory of
/// the attention scores for long inputs.
pub(crate) const MAX_BATCH_TOKENS: usize = 4096;

/// Splits sequences with the given lengths into batches of indices.
///
/// Sequences are sorted by length, longest first, so that each batch pads little. A batch holds
/// at most `max_sequences` sequences and at most `max_tokens` padded tokens, but always at least
/// one sequence (a single sequence longer than `max_tokens` gets a batch of its own).
pub(crate) fn plan_batches(
    lengths: &[usize],
    max_sequences: usize,
    max_tokens: usize,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths.get(i).copied().unwrap_or(0)));

    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut padded_len = 0;
    for index in order {
        let len = lengths.get(index).copied().unwrap_or(0);
        let full = current.len() >= max_sequences.max(1)
            || (current.len() + 1).saturating_mul(padded_len.max(len)) > max_tokens;
        if full && !current.is_empty() {
            batches.push(std::mem::take(&mut current));
            padded_len = 0;
        }
        padded_len = padded_len.max(len);
        current.push(index);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_longest_first_and_keeps_every_index_once() {
        let batches = plan_batches(&[3, 9, 1, 9, 5], 2, 1000);
        assert_eq!(batches, vec![vec![1, 3], vec![4, 0], vec![2]]);
    }

    #[test]
    fn respects_the_token_budget() {
        // 10 x 3 = 30 > 25, so the third sequence of length 10 starts a new batch.
        let batches = plan_batches(&[10, 10, 10, 2], 32, 25);
        assert_eq!(batches, vec![vec![0, 1], vec![2, 3]]);
    }

    #[test]
    fn an_oversized_sequence_gets_its_own_batch() {
        let batches = plan_batches(&[100, 4], 32, 50);
        assert_eq!(batches, vec![vec![0], vec![1]]);
    }

    #[test]
    fn no_inputs_no_batches() {
        assert!(plan_batches(&[], 32, 100).is_empty());
    }
}

//! The order in which one step's matrix products add up, row by row: llama.cpp multiplies a
//! prompt's rows in another order than a single token's.

use helixflow_kernels::format::QuantFormat;
use helixflow_kernels::packed::Accumulation;

/// The batch from which llama.cpp multiplies K-quant weights with ggml's tiled kernel (its
/// `ggml_tiled_min_batch`): a prompt this long, or this many of a prompt's rows routed to one
/// expert, take that kernel's order.
pub const TILED_MIN_ROWS: usize = 8;

/// How one step's matrix products add up, input row by input row.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepOrder<'a> {
    /// The order of the packed kernels, for every row.
    pub packed: Accumulation,
    /// One flag per input row: whether the row takes llama.cpp's batched K-quant order
    /// (ggml's tiled kernel, which it runs on batches of eight rows or more) rather than its
    /// single-row one. Empty for none; other formats ignore it.
    pub tiled_rows: &'a [bool],
    /// One entry per input row, as long as `tiled_rows`: the sequence the row belongs to (a
    /// sequence's rows are consecutive). Experts count their tiled rows per sequence.
    pub row_sequences: &'a [u32],
}

impl From<Accumulation> for StepOrder<'static> {
    fn from(packed: Accumulation) -> Self {
        Self {
            packed,
            tiled_rows: &[],
            row_sequences: &[],
        }
    }
}

impl StepOrder<'_> {
    /// This order without tiled rows: for products over a selection of the step's rows.
    pub fn untiled(self) -> StepOrder<'static> {
        self.packed.into()
    }

    /// The order of one expert's product over the step's rows `routed` (ascending indices),
    /// with `flags` as its buffer. llama.cpp takes the tiled order for an expert when eight
    /// rows or more of its batch go to it; HelixFlow counts a sequence's prompt rows alone,
    /// so that what shares the step changes nothing, and matches llama.cpp whenever the
    /// prompt is prefilled in one step, as llama.cpp does within one micro-batch.
    pub fn for_expert<'b>(self, routed: &[usize], flags: &'b mut Vec<bool>) -> StepOrder<'b> {
        flags.clear();
        let rows = self.tiled_rows.len();
        if rows == 0 || self.row_sequences.len() != rows || routed.iter().any(|&r| r >= rows) {
            return self.untiled();
        }
        let mut start = 0;
        while start < routed.len() {
            let sequence = self.row_sequences[routed[start]];
            let run = routed[start..]
                .iter()
                .take_while(|&&r| self.row_sequences[r] == sequence)
                .count();
            let run = &routed[start..start + run];
            let tiled = run.iter().filter(|&&r| self.tiled_rows[r]).count() >= TILED_MIN_ROWS;
            flags.extend(run.iter().map(|&r| tiled && self.tiled_rows[r]));
            start += run.len();
        }
        let flags: &'b Vec<bool> = flags;
        StepOrder {
            packed: self.packed,
            tiled_rows: flags,
            row_sequences: &[],
        }
    }
}

/// `W::dot_matrix`, each run of activation rows in its order of `tiled_rows` (one flag per
/// row, or empty for none).
pub(super) fn dot_matrix_in<W: QuantFormat>(
    tiled_rows: &[bool],
    x: &[W],
    nb: usize,
    acts: &[W::Act],
    out: &mut [f32],
) {
    let n = acts.len() / nb;
    if !W::HAS_TILED_ORDER || tiled_rows.len() != n || !tiled_rows.contains(&true) {
        return W::dot_matrix(x, nb, acts, out);
    }
    for (row, o) in x.chunks_exact(nb).zip(out.chunks_exact_mut(n)) {
        let mut start = 0;
        while start < n {
            let tiled = tiled_rows[start];
            let len = tiled_rows[start..]
                .iter()
                .take_while(|&&t| t == tiled)
                .count();
            let (acts, o) = (
                &acts[start * nb..(start + len) * nb],
                &mut o[start..start + len],
            );
            if tiled {
                W::dot_rows_tiled(row, acts, o);
            } else {
                W::dot_rows(row, acts, o);
            }
            start += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expert_takes_the_tiled_order_for_a_sequence_that_routes_it_eight_prompt_rows() {
        // Sequence 0: a 10-row prompt; sequence 1: 10 rows of which 3 are prompt rows.
        let tiled: Vec<bool> = (0..20).map(|r| r < 13).collect();
        let sequences: Vec<u32> = (0..20).map(|r| u32::from(r >= 10)).collect();
        let order = StepOrder {
            packed: Accumulation::default(),
            tiled_rows: &tiled,
            row_sequences: &sequences,
        };
        let mut flags = Vec::new();
        // Eight of sequence 0's prompt rows, and sequence 1's three with two decoded rows.
        let routed = [0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 12, 15, 19];
        let expert = order.for_expert(&routed, &mut flags);
        let mut want = vec![true; 8];
        want.extend([false; 5]);
        assert_eq!(expert.tiled_rows, want.as_slice());
        // Seven rows of the prompt: the single-row order.
        let expert = order.for_expert(&routed[1..], &mut flags);
        assert_eq!(expert.tiled_rows, vec![false; 12].as_slice());
        // No tiled rows in the step: none for the expert either.
        let expert = order.untiled().for_expert(&routed, &mut flags);
        assert!(expert.tiled_rows.is_empty());
    }
}

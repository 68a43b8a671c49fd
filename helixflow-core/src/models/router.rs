//! A mixture of experts' router: one logit per expert for each token.
//!
//! Its logits decide which experts run, so where two experts come close a last-bit difference
//! sends a token elsewhere and changes the output at once. An F32 router (llama.cpp's
//! quantizer never quantises it) is therefore multiplied as llama.cpp's CPU backend does it:
//! with llamafile's sgemm where a sequence's rows come two or more at a time (a prompt) and
//! the experts are a multiple of eight, else `ggml_vec_dot_f32` row by row. That rule is
//! measured, not read: held to llama.cpp's logits on tiny models whose routing comes within an
//! ulp of a tie, with 4, 8 and 32 experts. A router in another format goes through the
//! common matrix kernels.

use helixflow_kernels::f32dot::{dot_f32, dot_f32_sgemm};

use crate::cpu::{StepOrder, WeightMatrix};
use crate::error::Result;
use crate::models::GgmlBuild;

/// A router's weights: `[experts, hidden]`.
#[derive(Debug)]
pub enum Router {
    /// F32 rows, multiplied in ggml's order.
    F32 {
        /// One row per expert, `cols` values each.
        weights: Vec<f32>,
        /// The model's width.
        cols: usize,
    },
    /// Any other format.
    Matrix(WeightMatrix),
}

impl Router {
    /// Experts (output width).
    pub fn rows(&self) -> usize {
        match self {
            Self::F32 { weights, cols } => weights.len() / cols.max(&1),
            Self::Matrix(m) => m.rows(),
        }
    }

    /// The model's width (input width).
    pub fn cols(&self) -> usize {
        match self {
            Self::F32 { cols, .. } => *cols,
            Self::Matrix(m) => m.cols(),
        }
    }

    /// `logits = input · Wᵀ` for the step's rows, as llama.cpp built as `build` adds up
    /// (`order` serves a router in another format).
    pub fn logits(
        &self,
        order: StepOrder<'_>,
        build: GgmlBuild,
        input: &[f32],
        logits: &mut [f32],
    ) -> Result<()> {
        let (weights, cols) = match self {
            Self::Matrix(m) => return m.matmul_in(order, input, logits),
            Self::F32 { weights, cols } => (weights, *cols),
        };
        let experts = self.rows();
        let n = input.len() / cols.max(1);
        let together = rows_together(order.row_sequences, n);
        for ((row, out), together) in input
            .chunks_exact(cols)
            .zip(logits.chunks_exact_mut(experts))
            .zip(together)
        {
            let dot = if together >= 2 && experts.is_multiple_of(8) {
                dot_f32_sgemm
            } else {
                dot_f32
            };
            for (logit, expert) in out.iter_mut().zip(weights.chunks_exact(cols)) {
                *logit = dot(build, expert, row);
            }
        }
        Ok(())
    }
}

/// For each of `n` rows, how many rows of its sequence the product takes (a sequence's rows
/// are consecutive); one each without `sequences` (one row per sequence).
fn rows_together(sequences: &[u32], n: usize) -> Vec<usize> {
    if sequences.len() != n {
        return vec![1; n];
    }
    let mut together = Vec::with_capacity(n);
    for run in sequences.chunk_by(|a, b| a == b) {
        together.extend(std::iter::repeat_n(run.len(), run.len()));
    }
    together
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_count_with_their_sequence() {
        assert_eq!(rows_together(&[0, 0, 0, 1, 2, 2], 6), [3, 3, 3, 1, 2, 2]);
        assert_eq!(rows_together(&[], 2), [1, 1]);
    }
}

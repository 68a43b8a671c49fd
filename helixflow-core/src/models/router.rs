//! A mixture of experts' router: one logit per expert for each token.
//!
//! Its logits decide which experts run, so where two experts come close a last-bit difference
//! sends a token elsewhere and changes the output at once. An F32 router (llama.cpp's
//! quantizer never quantises it) is therefore multiplied as llama.cpp's CPU backend does it,
//! `ggml_vec_dot_f32` row by row, prompt rows included (held to llama.cpp's logits on tiny
//! models whose routing comes within an ulp of a tie). A router in another format goes
//! through the common matrix kernels.

use helixflow_kernels::f32dot::dot_f32;

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
        for (row, out) in input
            .chunks_exact(cols)
            .zip(logits.chunks_exact_mut(experts))
        {
            for (logit, expert) in out.iter_mut().zip(weights.chunks_exact(cols)) {
                *logit = dot_f32(build, expert, row);
            }
        }
        Ok(())
    }
}

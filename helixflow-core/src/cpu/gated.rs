//! The gate and up projections of a gated feed-forward block, with the activation between
//! them: `act(x · Gᵀ) * (x · Uᵀ)`, SiLU (SwiGLU) or GELU (GeGLU).

use std::cell::RefCell;

use super::matmul::{MatrixGroup, StepOrder, WeightMatrix};
use crate::{Error, Result};
use helixflow_kernels::math::{self, GateActivation};
use helixflow_kernels::packed::Accumulation;
use helixflow_kernels::pool::Pool;

/// A feed-forward block's gate and up projections and the activation between them.
///
/// Where both are packed in one format, their rows are interleaved so that each parallel task
/// computes matching gate and up rows and applies SwiGLU to them at once: one parallel loop
/// and no intermediate up-projection buffer instead of two loops over two buffers. Otherwise
/// the two products run as a [`MatrixGroup`] and SwiGLU as a loop of its own. Both give the
/// same bits.
#[derive(Debug)]
pub struct GatedProjection {
    rows: usize,
    cols: usize,
    activation: GateActivation,
    products: Products,
}

#[derive(Debug)]
enum Products {
    Interleaved(WeightMatrix),
    Grouped(MatrixGroup),
}

impl GatedProjection {
    /// The projection of `gate` and `up`, which must have the same shape, with SwiGLU.
    pub fn new(gate: WeightMatrix, up: WeightMatrix) -> Result<Self> {
        Self::with_activation(gate, up, GateActivation::Silu)
    }

    /// The projection of `gate` and `up`, which must have the same shape, with `activation`.
    pub fn with_activation(
        gate: WeightMatrix,
        up: WeightMatrix,
        activation: GateActivation,
    ) -> Result<Self> {
        if (gate.rows(), gate.cols()) != (up.rows(), up.cols()) {
            return Err(Error::InvalidRequest(format!(
                "a gate of {}x{} and an up projection of {}x{} do not pair",
                gate.rows(),
                gate.cols(),
                up.rows(),
                up.cols()
            )));
        }
        let (rows, cols) = (gate.rows(), gate.cols());
        let products = match WeightMatrix::interleave_gated(&gate, &up) {
            Some(interleaved) => Products::Interleaved(interleaved),
            None => Products::Grouped(MatrixGroup::new(vec![gate, up])?),
        };
        Ok(Self {
            rows,
            cols,
            activation,
            products,
        })
    }

    /// The activation between the products.
    pub fn activation(&self) -> GateActivation {
        self.activation
    }

    /// Replaces the activation (to compute it as another ggml build does).
    pub fn set_activation(&mut self, activation: GateActivation) {
        self.activation = activation;
    }

    /// Whether the products and the activation run fused, as one parallel loop.
    pub fn is_fused(&self) -> bool {
        matches!(self.products, Products::Interleaved(_))
    }

    /// Output width (the gate's rows).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input width.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `out = act(input · Gᵀ) * (input · Uᵀ)` for `input` of `n` rows of [`Self::cols`]
    /// values; `out` gets `n` rows of [`Self::rows`] values.
    pub fn forward(&self, input: &[f32], out: &mut [f32]) -> Result<()> {
        self.forward_in(Accumulation::Ggml.into(), input, out)
    }

    /// [`Self::forward`], adding up in the order `order`.
    pub fn forward_in(&self, order: StepOrder<'_>, input: &[f32], out: &mut [f32]) -> Result<()> {
        let n = input.len() / self.cols.max(1);
        if input.len() != n * self.cols || out.len() != n * self.rows {
            return Err(Error::InvalidRequest(format!(
                "a gated projection of {} inputs into {} outputs does not fit {}x{} matrices",
                input.len(),
                out.len(),
                self.rows,
                self.cols
            )));
        }
        match &self.products {
            Products::Interleaved(matrix) => {
                matrix.matmul_gated(self.activation, order.packed, input, out)
            }
            Products::Grouped(group) => {
                thread_local! {
                    /// The up projection's output, kept between calls so that decoding does
                    /// not allocate it anew each step.
                    static UP: RefCell<Vec<f32>> = RefCell::default();
                }
                // Taken out while in use, so that a nested call cannot find it borrowed.
                let mut up = UP.take();
                up.resize(out.len(), 0.0);
                let result = group.matmul_in(order, input, &mut [&mut *out, &mut up]);
                if result.is_ok() {
                    let rows = self.rows;
                    Pool::global().for_each_chunk_mut(out, rows, |row, gate| {
                        math::gated(self.activation, gate, &up[row * rows..(row + 1) * rows]);
                    });
                }
                UP.set(up);
                result
            }
        }
    }
}

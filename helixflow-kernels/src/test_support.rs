//! Random inputs shared by the kernels' unit tests.

use half::f16;
use rand::rngs::StdRng;
use rand::Rng;

use crate::quant::{quantize_row, ActBlock, ActFormat, BLOCK};

/// A small random f16 scale (or minimum), as bits.
pub fn scale(rng: &mut StdRng) -> u16 {
    f16::from_f32(rng.random_range(-0.05f32..0.05)).to_bits()
}

/// `rows` random activation rows of `nb` blocks each, quantised to `format`.
pub fn activations(rng: &mut StdRng, rows: usize, nb: usize, format: ActFormat) -> Vec<ActBlock> {
    let x: Vec<f32> = (0..rows * nb * BLOCK)
        .map(|_| rng.random_range(-3.0f32..3.0))
        .collect();
    let mut acts = vec![ActBlock::default(); rows * nb];
    for (row, blocks) in x.chunks_exact(nb * BLOCK).zip(acts.chunks_exact_mut(nb)) {
        quantize_row(row, format, blocks);
    }
    acts
}

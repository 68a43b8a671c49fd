//! The interface every quantised weight format offers to matrix products.

use crate::dot::{dot_matrix, dot_rows, dot_scalar};
use crate::quant::{
    quantize_row, ActBlock, ActFormat, BlockQ4_0, BlockQ4_1, BlockQ5_1, BlockQ8_0, BLOCK,
};

/// A quantised weight block format as stored in GGUF, with the activation blocks its dot
/// products take and the kernels that compute them.
pub trait QuantFormat: Copy + Send + Sync + 'static {
    /// The quantised activation block this format multiplies with.
    type Act: Copy + Default + Send + Sync + 'static;
    /// ggml's name of the format (`Q4_1`, `Q6_K`, ...).
    const NAME: &'static str;
    /// Weights (and activation values) per block.
    const BLOCK_VALUES: usize;
    /// Bytes per block in a GGUF file.
    const BYTES: usize;

    /// Reads blocks from little-endian GGUF bytes (a multiple of [`Self::BYTES`]).
    fn parse_all(bytes: &[u8]) -> Vec<Self>;
    /// Writes the block's [`Self::BLOCK_VALUES`] weights into `out`.
    fn dequantize(&self, out: &mut [f32]);
    /// Quantises one activation row (a multiple of [`Self::BLOCK_VALUES`] values).
    fn quantize_acts(x: &[f32], out: &mut [Self::Act]);
    /// The scalar reference dot product of one weight row with one activation row.
    fn dot_reference(x: &[Self], y: &[Self::Act]) -> f32;
    /// Dot products of one weight row (`x`, of `nb` blocks) with each of `out.len()`
    /// activation rows stored back to back in `acts`, with the fastest kernel this CPU has.
    /// Bit-identical to [`Self::dot_reference`].
    fn dot_rows(x: &[Self], acts: &[Self::Act], out: &mut [f32]);
    /// Whether llama.cpp adds up this format's products in another order for a batch of
    /// eight activation rows or more ([`Self::dot_rows_tiled`]).
    const HAS_TILED_ORDER: bool = false;
    /// [`Self::dot_rows`] in the order llama.cpp takes for a batch of eight rows or more
    /// (ggml's tiled K-quant kernel, [`crate::kquant::KQuantOrder::Tiled`]); the same as
    /// [`Self::dot_rows`] for formats without one.
    fn dot_rows_tiled(x: &[Self], acts: &[Self::Act], out: &mut [f32]) {
        Self::dot_rows(x, acts, out)
    }
    /// Dot products of every weight row of `x` (rows of `nb` blocks, back to back) with every
    /// activation row of `acts`, into `out[w * n + r]` for weight row `w` and activation row
    /// `r` of `n`. Formats with kernels that share work across weight rows override it.
    fn dot_matrix(x: &[Self], nb: usize, acts: &[Self::Act], out: &mut [f32]) {
        let n = acts.len() / nb;
        for (row, o) in x.chunks_exact(nb).zip(out.chunks_exact_mut(n)) {
            Self::dot_rows(row, acts, o);
        }
    }
}

macro_rules! legacy_format {
    ($block:ty, $name:literal, $act:expr) => {
        impl QuantFormat for $block {
            type Act = ActBlock;
            const NAME: &'static str = $name;
            const BLOCK_VALUES: usize = BLOCK;
            const BYTES: usize = <$block>::BYTES;

            fn parse_all(bytes: &[u8]) -> Vec<Self> {
                <$block>::parse_all(bytes)
            }
            fn dequantize(&self, out: &mut [f32]) {
                <$block>::dequantize(self, out)
            }
            fn quantize_acts(x: &[f32], out: &mut [ActBlock]) {
                quantize_row(x, $act, out)
            }
            fn dot_reference(x: &[Self], y: &[ActBlock]) -> f32 {
                dot_scalar(x, y)
            }
            fn dot_rows(x: &[Self], acts: &[ActBlock], out: &mut [f32]) {
                dot_rows(x, acts, out)
            }
            fn dot_matrix(x: &[Self], nb: usize, acts: &[ActBlock], out: &mut [f32]) {
                dot_matrix(x, nb, acts, out)
            }
        }
    };
}

legacy_format!(BlockQ4_0, "Q4_0", ActFormat::Q8_0);
legacy_format!(BlockQ4_1, "Q4_1", ActFormat::Q8_1);
legacy_format!(BlockQ5_1, "Q5_1", ActFormat::Q8_1);
legacy_format!(BlockQ8_0, "Q8_0", ActFormat::Q8_0);

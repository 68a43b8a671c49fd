//! A weight matrix and its product with rows of f32 activations.

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};
use rayon::prelude::*;

use super::dot::{dot_rows, SimdDot, WeightBlock};
use super::quant::{quantize_row, ActBlock, ActFormat, BlockQ4_0, BlockQ4_1, BlockQ8_0, BLOCK};
use crate::gguf::GgufFile;
use crate::{Error, Result};

/// Weight rows handed to one parallel task: enough work to amortise scheduling, small enough
/// to balance two to sixteen threads on the matrices of small models.
const ROWS_PER_TASK: usize = 32;

/// A `[rows, cols]` weight matrix from a GGUF file.
///
/// `Q4_0`, `Q4_1` and `Q8_0` weights use this crate's kernels, which reproduce llama.cpp's
/// arithmetic; other types go through candle's quantised matmul.
pub struct WeightMatrix {
    rows: usize,
    cols: usize,
    weights: Weights,
}

enum Weights {
    Q4_0(Vec<BlockQ4_0>),
    Q4_1(Vec<BlockQ4_1>),
    Q8_0(Vec<BlockQ8_0>),
    Candle(QMatMul),
}

impl std::fmt::Debug for WeightMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.weights {
            Weights::Q4_0(_) => "Q4_0",
            Weights::Q4_1(_) => "Q4_1",
            Weights::Q8_0(_) => "Q8_0",
            Weights::Candle(_) => "candle",
        };
        f.debug_struct("WeightMatrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("kind", &kind)
            .finish()
    }
}

impl WeightMatrix {
    /// Loads the 2-D tensor `name`, which must have shape `[rows, cols]`.
    pub fn from_gguf(gguf: &GgufFile, name: &str) -> Result<Self> {
        let (info, bytes) = gguf.tensor_bytes(name)?;
        let &[rows, cols] = info.shape.as_slice() else {
            return Err(Error::invalid_file(
                gguf.path(),
                format!("tensor `{name}` is not a matrix: shape {:?}", info.shape),
            ));
        };
        let quantized = matches!(
            info.dtype,
            GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q8_0
        );
        if quantized
            && (cols % BLOCK != 0 || bytes.len() != rows * cols / BLOCK * info.dtype.type_size())
        {
            return Err(Error::invalid_file(
                gguf.path(),
                format!(
                    "tensor `{name}` has {} bytes for shape {:?}",
                    bytes.len(),
                    info.shape
                ),
            ));
        }
        let weights = match info.dtype {
            GgmlDType::Q4_0 => Weights::Q4_0(BlockQ4_0::parse_all(bytes)),
            GgmlDType::Q4_1 => Weights::Q4_1(BlockQ4_1::parse_all(bytes)),
            GgmlDType::Q8_0 => Weights::Q8_0(BlockQ8_0::parse_all(bytes)),
            _ => Weights::Candle(QMatMul::from_qtensor(gguf.tensor(name, &Device::Cpu)?)?),
        };
        Ok(Self {
            rows,
            cols,
            weights,
        })
    }

    /// Output width.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input width.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `out = input · Wᵀ` for `input` of `n` rows of [`Self::cols`] values; `out` gets `n`
    /// rows of [`Self::rows`] values.
    pub fn matmul(&self, input: &[f32], out: &mut [f32]) -> Result<()> {
        let n = input.len() / self.cols;
        if input.len() != n * self.cols || out.len() != n * self.rows {
            return Err(Error::InvalidRequest(format!(
                "matmul of {} inputs and {} outputs does not fit a {}x{} matrix",
                input.len(),
                out.len(),
                self.rows,
                self.cols
            )));
        }
        match &self.weights {
            Weights::Q4_0(w) => self.quantized(w, ActFormat::Q8_0, input, out),
            Weights::Q4_1(w) => self.quantized(w, ActFormat::Q8_1, input, out),
            Weights::Q8_0(w) => self.quantized(w, ActFormat::Q8_0, input, out),
            Weights::Candle(m) => {
                let x = Tensor::from_slice(input, (n, self.cols), &Device::Cpu)?;
                let y = m.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
                out.copy_from_slice(&y);
            }
        }
        Ok(())
    }

    /// Writes row `row` as f32 into `out`, if this matrix has one of this crate's formats
    /// (embedding lookup); `false` otherwise.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) -> bool {
        let nb = self.cols / BLOCK;
        let span = row * nb..(row + 1) * nb;
        let chunks = out.chunks_exact_mut(BLOCK);
        match &self.weights {
            Weights::Q4_0(w) => w[span]
                .iter()
                .zip(chunks)
                .for_each(|(b, o)| b.dequantize(o)),
            Weights::Q4_1(w) => w[span]
                .iter()
                .zip(chunks)
                .for_each(|(b, o)| b.dequantize(o)),
            Weights::Q8_0(w) => w[span]
                .iter()
                .zip(chunks)
                .for_each(|(b, o)| b.dequantize(o)),
            Weights::Candle(_) => return false,
        }
        true
    }

    fn quantized<W: WeightBlock + SimdDot>(
        &self,
        weights: &[W],
        format: ActFormat,
        input: &[f32],
        out: &mut [f32],
    ) {
        let nb = self.cols / BLOCK;
        let n = input.len() / self.cols;
        let mut acts = vec![ActBlock::default(); n * nb];
        acts.par_chunks_mut(nb)
            .zip(input.par_chunks(self.cols))
            .for_each(|(blocks, row)| quantize_row(row, format, blocks));
        // Parallel over weight rows; each task takes all activation rows for its weight rows,
        // so a weight block is loaded once per tile of activation rows.
        let by_weight_row = |dst: &mut [f32]| {
            dst.par_chunks_mut(ROWS_PER_TASK * n)
                .enumerate()
                .for_each(|(task, chunk)| {
                    for (i, o) in chunk.chunks_exact_mut(n).enumerate() {
                        let r = task * ROWS_PER_TASK + i;
                        dot_rows(&weights[r * nb..(r + 1) * nb], &acts, o);
                    }
                });
        };
        if n == 1 {
            by_weight_row(out);
        } else {
            let mut transposed = vec![0f32; n * self.rows];
            by_weight_row(&mut transposed);
            for (r, column) in transposed.chunks_exact(n).enumerate() {
                for (t, &v) in column.iter().enumerate() {
                    out[t * self.rows + r] = v;
                }
            }
        }
    }
}

//! A weight matrix and its product with rows of f32 activations.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};

use crate::gguf::GgufFile;
use crate::{Error, Result};
use helixflow_kernels::format::QuantFormat;
use helixflow_kernels::kquant::{BlockQ4K, BlockQ6K};
use helixflow_kernels::pool::Pool;
use helixflow_kernels::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0};

/// Weight rows handed to one parallel task: enough work to amortise scheduling, small enough
/// to balance two to sixteen threads on the matrices of small models.
const ROWS_PER_TASK: usize = 32;

/// Activation rows quantised per parallel task.
const QUANTIZE_ROWS_PER_TASK: usize = 8;

/// A `[rows, cols]` weight matrix from a GGUF file.
///
/// `Q4_0`, `Q4_1`, `Q8_0`, `Q4_K` and `Q6_K` weights use this crate's kernels, which reproduce
/// llama.cpp's arithmetic; other types go through candle's quantised matmul.
pub struct WeightMatrix {
    rows: usize,
    cols: usize,
    weights: Weights,
}

enum Weights {
    Q4_0(Vec<BlockQ4_0>),
    Q4_1(Vec<BlockQ4_1>),
    Q8_0(Vec<BlockQ8_0>),
    Q4K(Vec<BlockQ4K>),
    Q6K(Vec<BlockQ6K>),
    Candle(QMatMul),
}

impl std::fmt::Debug for WeightMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.weights {
            Weights::Q4_0(_) => "Q4_0",
            Weights::Q4_1(_) => "Q4_1",
            Weights::Q8_0(_) => "Q8_0",
            Weights::Q4K(_) => "Q4_K",
            Weights::Q6K(_) => "Q6_K",
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
        let parse = ParseBlocks {
            gguf,
            name,
            shape: [rows, cols],
            bytes,
        };
        let weights = match info.dtype {
            GgmlDType::Q4_0 => Weights::Q4_0(parse.blocks()?),
            GgmlDType::Q4_1 => Weights::Q4_1(parse.blocks()?),
            GgmlDType::Q8_0 => Weights::Q8_0(parse.blocks()?),
            GgmlDType::Q4K => Weights::Q4K(parse.blocks()?),
            GgmlDType::Q6K => Weights::Q6K(parse.blocks()?),
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
            Weights::Q4_0(w) => self.quantized(w, input, out),
            Weights::Q4_1(w) => self.quantized(w, input, out),
            Weights::Q8_0(w) => self.quantized(w, input, out),
            Weights::Q4K(w) => self.quantized(w, input, out),
            Weights::Q6K(w) => self.quantized(w, input, out),
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
        fn blocks<W: QuantFormat>(weights: &[W], row: usize, out: &mut [f32]) {
            let nb = out.len() / W::BLOCK_VALUES;
            let chunks = out.chunks_exact_mut(W::BLOCK_VALUES);
            for (block, o) in weights[row * nb..(row + 1) * nb].iter().zip(chunks) {
                block.dequantize(o);
            }
        }
        match &self.weights {
            Weights::Q4_0(w) => blocks(w, row, out),
            Weights::Q4_1(w) => blocks(w, row, out),
            Weights::Q8_0(w) => blocks(w, row, out),
            Weights::Q4K(w) => blocks(w, row, out),
            Weights::Q6K(w) => blocks(w, row, out),
            Weights::Candle(_) => return false,
        }
        true
    }

    fn quantized<W: QuantFormat>(&self, weights: &[W], input: &[f32], out: &mut [f32]) {
        let nb = self.cols / W::BLOCK_VALUES;
        let n = input.len() / self.cols;
        with_buffer(n * nb, |acts: &mut [W::Act]| {
            self.quantized_into(weights, input, acts, out);
        });
    }

    fn quantized_into<W: QuantFormat>(
        &self,
        weights: &[W],
        input: &[f32],
        acts: &mut [W::Act],
        out: &mut [f32],
    ) {
        let nb = self.cols / W::BLOCK_VALUES;
        let n = input.len() / self.cols;
        let pool = Pool::global();
        if n < QUANTIZE_ROWS_PER_TASK {
            // A loop of its own would cost more than quantising a few rows here.
            for (blocks, row) in acts.chunks_exact_mut(nb).zip(input.chunks_exact(self.cols)) {
                W::quantize_acts(row, blocks);
            }
        } else {
            pool.for_each_chunk_mut(acts, QUANTIZE_ROWS_PER_TASK * nb, |task, blocks| {
                let first = task * QUANTIZE_ROWS_PER_TASK * self.cols;
                let rows = &input[first..first + blocks.len() / nb * self.cols];
                for (blocks, row) in blocks
                    .chunks_exact_mut(nb)
                    .zip(rows.chunks_exact(self.cols))
                {
                    W::quantize_acts(row, blocks);
                }
            });
        }
        // Parallel over weight rows; each task takes all activation rows for its weight rows,
        // so a weight block is loaded once per tile of activation rows.
        let by_weight_row = |dst: &mut [f32]| {
            pool.for_each_chunk_mut(dst, ROWS_PER_TASK * n, |task, chunk| {
                let first = task * ROWS_PER_TASK;
                let rows = chunk.len() / n;
                W::dot_matrix(&weights[first * nb..(first + rows) * nb], nb, acts, chunk);
            });
        };
        if n == 1 {
            by_weight_row(out);
        } else {
            with_buffer(n * self.rows, |transposed: &mut [f32]| {
                by_weight_row(transposed);
                for (r, column) in transposed.chunks_exact(n).enumerate() {
                    for (t, &v) in column.iter().enumerate() {
                        out[t * self.rows + r] = v;
                    }
                }
            });
        }
    }
}

/// Runs `f` on `len` values of `T` from a buffer this thread keeps for the purpose, so that
/// products in a decode loop do not allocate once the buffers have grown. The contents are
/// whatever the last user left.
fn with_buffer<T: Default + Clone + 'static, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    thread_local! {
        static BUFFERS: RefCell<HashMap<TypeId, Box<dyn Any>>> = RefCell::default();
    }
    // Taken out of the map while in use (moving the box allocates nothing), so a nested call
    // for another type, or the same one, cannot find it borrowed.
    let mut buffer = BUFFERS
        .with_borrow_mut(|map| map.remove(&TypeId::of::<T>()))
        .unwrap_or_else(|| Box::new(Vec::<T>::new()));
    let vec = buffer
        .downcast_mut::<Vec<T>>()
        .expect("buffers are keyed by their type");
    if vec.len() < len {
        vec.resize(len, T::default());
    }
    let result = f(&mut vec[..len]);
    BUFFERS.with_borrow_mut(|map| map.insert(TypeId::of::<T>(), buffer));
    result
}

/// A tensor's bytes with what is needed to check them against a block format.
struct ParseBlocks<'a> {
    gguf: &'a GgufFile,
    name: &'a str,
    shape: [usize; 2],
    bytes: &'a [u8],
}

impl ParseBlocks<'_> {
    /// The blocks of format `W`, if the shape is whole blocks and the byte count fits it.
    fn blocks<W: QuantFormat>(&self) -> Result<Vec<W>> {
        let [rows, cols] = self.shape;
        if cols % W::BLOCK_VALUES != 0
            || self.bytes.len() != rows * cols / W::BLOCK_VALUES * W::BYTES
        {
            return Err(Error::invalid_file(
                self.gguf.path(),
                format!(
                    "tensor `{}` has {} bytes for shape {:?} of {}",
                    self.name,
                    self.bytes.len(),
                    self.shape,
                    W::NAME
                ),
            ));
        }
        Ok(W::parse_all(self.bytes))
    }
}

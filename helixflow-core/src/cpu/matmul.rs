//! A weight matrix and its product with rows of f32 activations.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};

use super::output_parts::OutputParts;
use super::step_order::dot_matrix_in;
pub use super::step_order::{StepOrder, TILED_MIN_ROWS};
use crate::gguf::GgufFile;
use crate::{Error, Result};
use helixflow_kernels::format::QuantFormat;
use helixflow_kernels::kquant::{BlockQ4K, BlockQ5K, BlockQ6K};
use helixflow_kernels::math::{self, GateActivation};
use helixflow_kernels::packed::{
    self, Accumulation, PackedFormat, PackedQ4_0, PackedQ4_1, PackedQ5_1, PackedQ8_0,
};
use helixflow_kernels::pool::Pool;
use helixflow_kernels::quant::{
    ActBlock, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BLOCK,
};

/// Weight rows handed to one parallel task: enough work to amortise scheduling, small enough
/// to balance two to sixteen threads on the matrices of small models.
const ROWS_PER_TASK: usize = 32;

/// Weight rows per task of a gated product: whole units of gate and up rows.
const GATED_TASK_ROWS: usize = 4 * GATED_UNIT;

/// A packed product's tasks grow beyond [`ROWS_PER_TASK`] rows while each thread still gets
/// at least this many of them to balance.
const TASKS_PER_THREAD: usize = 16;

/// The most weight rows of one packed product's task.
const MAX_ROWS_PER_TASK: usize = 256;

/// Weight rows per task of a packed product over `rows` rows on `threads` threads: a multiple
/// of [`ROWS_PER_TASK`], larger for matrices with many rows (the output projection). Weights
/// stream from memory, and each task starts on rows that no tile prefetched, its rows'
/// predecessors having gone to whichever thread took the task before it: on a 49152-row
/// `Q8_0` matrix, 256-row tasks run 11 % faster than 32-row ones on two threads.
fn rows_per_task(rows: usize, threads: usize) -> usize {
    (rows / (TASKS_PER_THREAD * threads) / ROWS_PER_TASK * ROWS_PER_TASK)
        .clamp(ROWS_PER_TASK, MAX_ROWS_PER_TASK)
}

/// Activation rows quantised per parallel task.
const QUANTIZE_ROWS_PER_TASK: usize = 8;

/// Rows of the gate projection, followed by as many of the up projection, in each unit of a
/// [`WeightMatrix::interleave_gated`] matrix: a task takes whole units, so that it computes
/// matching gate and up rows and applies SwiGLU to them while they are in its cache.
const GATED_UNIT: usize = ROWS_PER_TASK / 2;

/// What a packed product's task does with the rows it computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Epilogue {
    /// Writes them into the outputs.
    Store,
    /// Its rows are a gate unit then an up unit: writes `act(gate) * up` in the gate's place.
    Gated(GateActivation),
}

/// A `[rows, cols]` weight matrix from a GGUF file.
///
/// `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`, `Q4_K`, `Q5_K` and `Q6_K` weights use this crate's
/// kernels (`Q5_0` widened to `Q8_0`, whose products ggml computes the same way); other types
/// go through candle's quantised matmul. Where the CPU has the packed kernels (x86-64 with
/// AVX2), `Q4_0`, `Q4_1`, `Q5_1` and `Q8_0` rows are packed eight at a time at load
/// ([`helixflow_kernels::packed`]); elsewhere they keep the GGUF layout and the kernels that
/// reproduce llama.cpp's arithmetic.
pub struct WeightMatrix {
    rows: usize,
    cols: usize,
    weights: Weights,
}

enum Weights {
    Q4_0(Vec<BlockQ4_0>),
    Q4_1(Vec<BlockQ4_1>),
    Q5_1(Vec<BlockQ5_1>),
    Q8_0(Vec<BlockQ8_0>),
    Q4K(Vec<BlockQ4K>),
    Q5K(Vec<BlockQ5K>),
    Q6K(Vec<BlockQ6K>),
    PackedQ4_0(Vec<PackedQ4_0>),
    PackedQ4_1(Vec<PackedQ4_1>),
    PackedQ5_1(Vec<PackedQ5_1>),
    PackedQ8_0(Vec<PackedQ8_0>),
    Candle(QMatMul),
}

impl std::fmt::Debug for WeightMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.weights {
            Weights::Q4_0(_) => "Q4_0",
            Weights::Q4_1(_) => "Q4_1",
            Weights::Q5_1(_) => "Q5_1",
            Weights::Q8_0(_) => "Q8_0",
            Weights::Q4K(_) => "Q4_K",
            Weights::Q5K(_) => "Q5_K",
            Weights::Q6K(_) => "Q6_K",
            Weights::PackedQ4_0(_) => "Q4_0 packed",
            Weights::PackedQ4_1(_) => "Q4_1 packed",
            Weights::PackedQ5_1(_) => "Q5_1 packed",
            Weights::PackedQ8_0(_) => "Q8_0 packed",
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
        let info = Self::info(gguf, name)?;
        if info.shape.len() != 2 {
            return Err(Error::invalid_file(
                gguf.path(),
                format!("tensor `{name}` is not a matrix: shape {:?}", info.shape),
            ));
        }
        Self::from_gguf_rows(gguf, name, 0..info.shape[0])
    }

    /// Rows `rows` of tensor `name` read as a matrix of its last dimension's width: part of a
    /// fused projection (`attn_qkv`, Phi-3's gate and up), or one expert of a `[experts,
    /// rows, cols]` stack (expert `e` of `r` rows is rows `e·r..(e+1)·r`).
    pub fn from_gguf_rows(gguf: &GgufFile, name: &str, rows: Range<usize>) -> Result<Self> {
        let info = Self::info(gguf, name)?;
        let (&cols, leading) = info.shape.split_last().unwrap_or((&0, &[]));
        let all_rows: usize = leading.iter().product();
        if cols == 0 || rows.start >= rows.end || rows.end > all_rows {
            return Err(Error::invalid_file(
                gguf.path(),
                format!(
                    "tensor `{name}` of shape {:?} has no rows {rows:?}",
                    info.shape
                ),
            ));
        }
        let (_, bytes) = gguf.tensor_bytes(name)?;
        let (values, block_bytes) = (info.dtype.block_size(), info.dtype.type_size());
        if cols % values != 0 || bytes.len() != all_rows * cols / values * block_bytes {
            return Err(Error::invalid_file(
                gguf.path(),
                format!(
                    "tensor `{name}` has {} bytes for shape {:?} of {:?}",
                    bytes.len(),
                    info.shape,
                    info.dtype
                ),
            ));
        }
        let row_bytes = cols / values * block_bytes;
        let (first, count) = (rows.start, rows.len());
        let parse = ParseBlocks {
            gguf,
            name,
            shape: [count, cols],
            bytes: &bytes[first * row_bytes..rows.end * row_bytes],
        };
        let pack = packed::is_preferred();
        let nb = cols / BLOCK;
        let weights = match info.dtype {
            GgmlDType::Q4_0 if pack => Weights::PackedQ4_0(packed::pack(&parse.blocks()?, nb)),
            GgmlDType::Q4_1 if pack => Weights::PackedQ4_1(packed::pack(&parse.blocks()?, nb)),
            GgmlDType::Q5_1 if pack => Weights::PackedQ5_1(packed::pack(&parse.blocks()?, nb)),
            GgmlDType::Q8_0 if pack => Weights::PackedQ8_0(packed::pack(&parse.blocks()?, nb)),
            GgmlDType::Q5_0 if pack => {
                Weights::PackedQ8_0(packed::pack(&parse.q5_0_as_q8_0()?, nb))
            }
            GgmlDType::Q5_0 => Weights::Q8_0(parse.q5_0_as_q8_0()?),
            GgmlDType::Q4_0 => Weights::Q4_0(parse.blocks()?),
            GgmlDType::Q4_1 => Weights::Q4_1(parse.blocks()?),
            GgmlDType::Q5_1 => Weights::Q5_1(parse.blocks()?),
            GgmlDType::Q8_0 => Weights::Q8_0(parse.blocks()?),
            GgmlDType::Q4K => Weights::Q4K(parse.blocks()?),
            GgmlDType::Q5K => Weights::Q5K(parse.blocks()?),
            GgmlDType::Q6K => Weights::Q6K(parse.blocks()?),
            _ => Weights::Candle(QMatMul::from_qtensor(gguf.tensor_rows(
                name,
                rows,
                &Device::Cpu,
            )?)?),
        };
        Ok(Self {
            rows: count,
            cols,
            weights,
        })
    }

    fn info<'a>(gguf: &'a GgufFile, name: &str) -> Result<&'a crate::gguf::TensorInfo> {
        gguf.tensor_infos()
            .get(name)
            .ok_or_else(|| Error::invalid_file(gguf.path(), format!("tensor `{name}` is missing")))
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
        self.matmul_in(Accumulation::Ggml.into(), input, out)
    }

    /// [`Self::matmul`], adding up in the order `order`.
    pub fn matmul_in(&self, order: StepOrder<'_>, input: &[f32], out: &mut [f32]) -> Result<()> {
        self.matmul_split(order, input, &mut [out])
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
            Weights::Q5_1(w) => blocks(w, row, out),
            Weights::Q8_0(w) => blocks(w, row, out),
            Weights::Q4K(w) => blocks(w, row, out),
            Weights::Q5K(w) => blocks(w, row, out),
            Weights::Q6K(w) => blocks(w, row, out),
            Weights::PackedQ4_0(w) => packed::dequantize_row(w, out.len() / BLOCK, row, out),
            Weights::PackedQ4_1(w) => packed::dequantize_row(w, out.len() / BLOCK, row, out),
            Weights::PackedQ5_1(w) => packed::dequantize_row(w, out.len() / BLOCK, row, out),
            Weights::PackedQ8_0(w) => packed::dequantize_row(w, out.len() / BLOCK, row, out),
            Weights::Candle(_) => return false,
        }
        true
    }

    /// `input · Wᵀ` into `outs`, which split each output row's values (rows of this matrix)
    /// in order: `outs[i]` gets `n` rows of its own width. For a [`Self::stack`] of matrices,
    /// each gets its own product.
    fn matmul_split(
        &self,
        order: StepOrder<'_>,
        input: &[f32],
        outs: &mut [&mut [f32]],
    ) -> Result<()> {
        let n = input.len() / self.cols;
        let fits = input.len() == n * self.cols
            && outs.iter().map(|o| o.len()).sum::<usize>() == n * self.rows
            && outs.iter().all(|o| o.len() % n.max(1) == 0);
        if !fits {
            return Err(Error::InvalidRequest(format!(
                "matmul of {} inputs into outputs of {:?} values does not fit a {}x{} matrix",
                input.len(),
                outs.iter().map(|o| o.len()).collect::<Vec<_>>(),
                self.rows,
                self.cols
            )));
        }
        if n == 0 {
            return Ok(());
        }
        match &self.weights {
            Weights::Q4_0(w) => self.quantized(w, order, input, outs),
            Weights::Q4_1(w) => self.quantized(w, order, input, outs),
            Weights::Q5_1(w) => self.quantized(w, order, input, outs),
            Weights::Q8_0(w) => self.quantized(w, order, input, outs),
            Weights::Q4K(w) => self.quantized(w, order, input, outs),
            Weights::Q5K(w) => self.quantized(w, order, input, outs),
            Weights::Q6K(w) => self.quantized(w, order, input, outs),
            Weights::PackedQ4_0(w) => self.packed(w, input, outs, (order.packed, Epilogue::Store)),
            Weights::PackedQ4_1(w) => self.packed(w, input, outs, (order.packed, Epilogue::Store)),
            Weights::PackedQ5_1(w) => self.packed(w, input, outs, (order.packed, Epilogue::Store)),
            Weights::PackedQ8_0(w) => self.packed(w, input, outs, (order.packed, Epilogue::Store)),
            Weights::Candle(m) => {
                let [out] = outs else {
                    unreachable!("candle matrices are never stacked")
                };
                let x = Tensor::from_slice(input, (n, self.cols), &Device::Cpu)?;
                let y = m.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
                out.copy_from_slice(&y);
            }
        }
        Ok(())
    }

    /// One matrix whose rows are those of `parts` (all of one width) in order, if they all
    /// have this crate's same format (and, for packed formats, every part but the last has
    /// whole groups of rows, so that no padding falls between them); `parts` back otherwise.
    fn stack(parts: Vec<WeightMatrix>) -> std::result::Result<WeightMatrix, Vec<WeightMatrix>> {
        fn stacked_weights(parts: &[WeightMatrix]) -> Option<Weights> {
            let whole_groups = parts
                .iter()
                .rev()
                .skip(1)
                .all(|p| p.rows % packed::ROWS == 0);
            macro_rules! concat {
                ($format:ident) => {{
                    let mut all = Vec::new();
                    for part in parts {
                        let Weights::$format(blocks) = &part.weights else {
                            return None;
                        };
                        all.extend_from_slice(blocks);
                    }
                    Weights::$format(all)
                }};
            }
            Some(match parts.first()?.weights {
                Weights::Q4_0(_) => concat!(Q4_0),
                Weights::Q4_1(_) => concat!(Q4_1),
                Weights::Q5_1(_) => concat!(Q5_1),
                Weights::Q8_0(_) => concat!(Q8_0),
                Weights::Q4K(_) => concat!(Q4K),
                Weights::Q5K(_) => concat!(Q5K),
                Weights::Q6K(_) => concat!(Q6K),
                Weights::PackedQ4_0(_) if whole_groups => concat!(PackedQ4_0),
                Weights::PackedQ4_1(_) if whole_groups => concat!(PackedQ4_1),
                Weights::PackedQ5_1(_) if whole_groups => concat!(PackedQ5_1),
                Weights::PackedQ8_0(_) if whole_groups => concat!(PackedQ8_0),
                Weights::PackedQ4_0(_)
                | Weights::PackedQ4_1(_)
                | Weights::PackedQ5_1(_)
                | Weights::PackedQ8_0(_) => return None,
                Weights::Candle(_) => return None,
            })
        }
        match stacked_weights(&parts) {
            Some(weights) => Ok(WeightMatrix {
                rows: parts.iter().map(|p| p.rows).sum(),
                cols: parts[0].cols,
                weights,
            }),
            None => Err(parts),
        }
    }

    /// The gate projection `gate` and the up projection `up` (same shape and packed format)
    /// as one matrix whose rows alternate between them in units of [`GATED_UNIT`] rows, for
    /// [`Self::matmul_gated`]; `None` where they are not such a pair or their rows are not
    /// whole units.
    pub(super) fn interleave_gated(gate: &WeightMatrix, up: &WeightMatrix) -> Option<Self> {
        if (gate.rows, gate.cols) != (up.rows, up.cols) || !gate.rows.is_multiple_of(GATED_UNIT) {
            return None;
        }
        // Blocks per unit: the packed formats keep each group of rows' blocks together.
        let unit = GATED_UNIT / packed::ROWS * (gate.cols / BLOCK);
        fn interleave<P: Clone>(gate: &[P], up: &[P], unit: usize) -> Vec<P> {
            let mut all = Vec::with_capacity(gate.len() + up.len());
            for (g, u) in gate.chunks(unit).zip(up.chunks(unit)) {
                all.extend_from_slice(g);
                all.extend_from_slice(u);
            }
            all
        }
        let weights = match (&gate.weights, &up.weights) {
            (Weights::PackedQ4_0(g), Weights::PackedQ4_0(u)) => {
                Weights::PackedQ4_0(interleave(g, u, unit))
            }
            (Weights::PackedQ4_1(g), Weights::PackedQ4_1(u)) => {
                Weights::PackedQ4_1(interleave(g, u, unit))
            }
            (Weights::PackedQ5_1(g), Weights::PackedQ5_1(u)) => {
                Weights::PackedQ5_1(interleave(g, u, unit))
            }
            (Weights::PackedQ8_0(g), Weights::PackedQ8_0(u)) => {
                Weights::PackedQ8_0(interleave(g, u, unit))
            }
            _ => return None,
        };
        Some(Self {
            rows: gate.rows + up.rows,
            cols: gate.cols,
            weights,
        })
    }

    /// `out = act(input · Gᵀ) * (input · Uᵀ)` for a matrix from [`Self::interleave_gated`]:
    /// `out` gets `n` rows of half this matrix's rows, bit for bit what the two products and
    /// [`math::gated`] give apart.
    pub(super) fn matmul_gated(
        &self,
        activation: GateActivation,
        order: Accumulation,
        input: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        let n = input.len() / self.cols;
        if input.len() != n * self.cols || out.len() != n * (self.rows / 2) {
            return Err(Error::InvalidRequest(format!(
                "gated matmul of {} inputs into {} outputs does not fit a {}x{} matrix",
                input.len(),
                out.len(),
                self.rows,
                self.cols
            )));
        }
        if n == 0 {
            return Ok(());
        }
        let outs = &mut [out];
        match &self.weights {
            Weights::PackedQ4_0(w) => {
                self.packed(w, input, outs, (order, Epilogue::Gated(activation)))
            }
            Weights::PackedQ4_1(w) => {
                self.packed(w, input, outs, (order, Epilogue::Gated(activation)))
            }
            Weights::PackedQ5_1(w) => {
                self.packed(w, input, outs, (order, Epilogue::Gated(activation)))
            }
            Weights::PackedQ8_0(w) => {
                self.packed(w, input, outs, (order, Epilogue::Gated(activation)))
            }
            _ => {
                return Err(Error::InvalidRequest(
                    "a gated matmul needs interleaved packed weights".into(),
                ))
            }
        }
        Ok(())
    }

    fn quantized<W: QuantFormat>(
        &self,
        weights: &[W],
        order: StepOrder<'_>,
        input: &[f32],
        outs: &mut [&mut [f32]],
    ) {
        let nb = self.cols / W::BLOCK_VALUES;
        let n = input.len() / self.cols;
        with_buffer(n * nb, |acts: &mut [W::Act]| {
            self.quantized_into(weights, order.tiled_rows, input, acts, outs);
        });
    }

    /// Quantises the `n` input rows into `acts` for weights of format `W`.
    fn quantize_input<W: QuantFormat>(&self, input: &[f32], acts: &mut [W::Act]) {
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
    }

    fn quantized_into<W: QuantFormat>(
        &self,
        weights: &[W],
        tiled_rows: &[bool],
        input: &[f32],
        acts: &mut [W::Act],
        outs: &mut [&mut [f32]],
    ) {
        let nb = self.cols / W::BLOCK_VALUES;
        let n = input.len() / self.cols;
        let pool = Pool::global();
        self.quantize_input::<W>(input, acts);
        // Parallel over weight rows; each task takes all activation rows for its weight rows,
        // so a weight block is loaded once per tile of activation rows.
        if let ([out], 1) = (&mut *outs, n) {
            pool.for_each_chunk_mut(out, ROWS_PER_TASK, |task, chunk| {
                let first = task * ROWS_PER_TASK;
                let rows = chunk.len();
                let weights = &weights[first * nb..(first + rows) * nb];
                dot_matrix_in(tiled_rows, weights, nb, acts, chunk);
            });
            return;
        }
        // The kernels write `[weight row][activation row]` and each output wants the
        // transpose: every task transposes its own rows into the outputs, so that this runs
        // on every thread too.
        OutputParts::with(outs, n, |parts| {
            pool.for_each(self.rows.div_ceil(ROWS_PER_TASK), |task| {
                let first = task * ROWS_PER_TASK;
                let rows = ROWS_PER_TASK.min(self.rows - first);
                with_buffer(rows * n, |chunk: &mut [f32]| {
                    let weights = &weights[first * nb..(first + rows) * nb];
                    dot_matrix_in(tiled_rows, weights, nb, acts, chunk);
                    for (i, column) in chunk.chunks_exact(n).enumerate() {
                        // SAFETY: each task writes the columns of its own weight rows only.
                        unsafe { parts.write_column(first + i, column) };
                    }
                });
            });
        });
    }

    /// The product with packed weights: each task computes whole groups of eight rows for
    /// every input row, already in the outputs' order, and copies its rows into them (or,
    /// with [`Epilogue::Gated`], their gated product).
    fn packed<P: PackedFormat>(
        &self,
        weights: &[P],
        input: &[f32],
        outs: &mut [&mut [f32]],
        (order, epilogue): (Accumulation, Epilogue),
    ) {
        let nb = self.cols / BLOCK;
        let n = input.len() / self.cols;
        with_buffer(n * nb, |acts: &mut [ActBlock]| {
            self.quantize_input::<P::Block>(input, acts);
            let acts = &*acts;
            let pool = Pool::global();
            let plain = epilogue == Epilogue::Store;
            let task_rows = if plain {
                rows_per_task(self.rows, pool.threads())
            } else {
                GATED_TASK_ROWS
            };
            if let ([out], 1, 0, true) = (&mut *outs, n, self.rows % packed::ROWS, plain) {
                // One input row and whole groups: each task's rows are its part of `out`.
                pool.for_each_chunk_mut(out, task_rows, |task, chunk| {
                    let first = task * task_rows / packed::ROWS * nb;
                    let groups = &weights[first..first + chunk.len() / packed::ROWS * nb];
                    let ld = chunk.len();
                    packed::matrix_in(order, groups, nb, acts, chunk, ld);
                });
                return;
            }
            let groups_per_task = task_rows / packed::ROWS;
            let tasks = self.rows.div_ceil(packed::ROWS).div_ceil(groups_per_task);
            OutputParts::with(outs, n, |parts| {
                pool.for_each(tasks, |task| {
                    let first_group = task * groups_per_task;
                    let w = &weights[first_group * nb..];
                    let w = &w[..w.len().min(groups_per_task * nb)];
                    let ld = w.len() / nb * packed::ROWS;
                    with_buffer(n * ld, |chunk: &mut [f32]| {
                        packed::matrix_in(order, w, nb, acts, chunk, ld);
                        let first_row = first_group * packed::ROWS;
                        let rows = ld.min(self.rows - first_row);
                        if let Epilogue::Gated(activation) = epilogue {
                            // Whole units: each task has units of gate rows, each followed
                            // by the matching unit of up rows.
                            debug_assert!(rows == ld && ld.is_multiple_of(2 * GATED_UNIT));
                            for row in chunk.chunks_exact_mut(ld) {
                                for unit in row.chunks_exact_mut(2 * GATED_UNIT) {
                                    let (gate, up) = unit.split_at_mut(GATED_UNIT);
                                    math::gated(activation, gate, up);
                                }
                            }
                            for unit in 0..ld / (2 * GATED_UNIT) {
                                let (first, at) =
                                    (first_row / 2 + unit * GATED_UNIT, unit * 2 * GATED_UNIT);
                                // SAFETY: each task writes the rows of its own units only.
                                unsafe { parts.write_rows(first, GATED_UNIT, &chunk[at..], ld) };
                            }
                            return;
                        }
                        // SAFETY: each task writes the rows of its own groups only.
                        unsafe { parts.write_rows(first_row, rows, chunk, ld) };
                    });
                });
            });
        });
    }
}

/// Runs `f` on `len` values of `T` from a buffer this thread keeps for the purpose, so that
/// products in a decode loop do not allocate once the buffers have grown. The contents are
/// whatever the last user left.
pub(super) fn with_buffer<T: Default + Clone + 'static, R>(
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
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

/// Matrices that multiply the same input, such as a layer's query, key and value
/// projections. Where their formats allow, they are stacked into one matrix, so that one
/// product (one quantisation of the input, one parallel loop) computes them all.
#[derive(Debug)]
pub struct MatrixGroup {
    /// Each part's output width, in order.
    part_rows: Vec<usize>,
    /// The shared input width.
    cols: usize,
    parts: Parts,
}

#[derive(Debug)]
enum Parts {
    Stacked(WeightMatrix),
    Separate(Vec<WeightMatrix>),
}

impl MatrixGroup {
    /// Groups `parts`, which must all have the same input width.
    pub fn new(parts: Vec<WeightMatrix>) -> Result<Self> {
        if parts.windows(2).any(|w| w[0].cols != w[1].cols) {
            return Err(Error::InvalidRequest(format!(
                "matrices of input widths {:?} cannot share an input",
                parts.iter().map(|p| p.cols).collect::<Vec<_>>()
            )));
        }
        let part_rows = parts.iter().map(|p| p.rows).collect();
        let cols = parts.first().map_or(0, |p| p.cols);
        let parts = match WeightMatrix::stack(parts) {
            Ok(stacked) => Parts::Stacked(stacked),
            Err(parts) => Parts::Separate(parts),
        };
        Ok(Self {
            part_rows,
            cols,
            parts,
        })
    }

    /// Whether the parts run as one stacked product.
    pub fn is_stacked(&self) -> bool {
        matches!(self.parts, Parts::Stacked(_))
    }

    /// `outs[i] = input · Wᵢᵀ` for each part `i`, where `input` has `n` rows and `outs[i]`
    /// gets `n` rows of part `i`'s output width.
    pub fn matmul(&self, input: &[f32], outs: &mut [&mut [f32]]) -> Result<()> {
        self.matmul_in(Accumulation::Ggml.into(), input, outs)
    }

    /// [`Self::matmul`], adding up in the order `order`.
    pub fn matmul_in(
        &self,
        order: StepOrder<'_>,
        input: &[f32],
        outs: &mut [&mut [f32]],
    ) -> Result<()> {
        let n = input.len() / self.cols.max(1);
        let fits = input.len() == n * self.cols
            && outs.len() == self.part_rows.len()
            && outs
                .iter()
                .zip(&self.part_rows)
                .all(|(o, &r)| o.len() == n * r);
        if !fits {
            return Err(Error::InvalidRequest(format!(
                "matmul of {} inputs into outputs of {:?} values does not fit matrices of \
                 {:?} rows and {} columns",
                input.len(),
                outs.iter().map(|o| o.len()).collect::<Vec<_>>(),
                self.part_rows,
                self.cols
            )));
        }
        match &self.parts {
            Parts::Stacked(matrix) => matrix.matmul_split(order, input, outs),
            Parts::Separate(parts) => {
                for (part, out) in parts.iter().zip(outs.iter_mut()) {
                    part.matmul_in(order, input, out)?;
                }
                Ok(())
            }
        }
    }
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
        self.check(W::BLOCK_VALUES, W::BYTES, W::NAME)?;
        Ok(W::parse_all(self.bytes))
    }

    /// `Q5_0` blocks widened to `Q8_0` ([`BlockQ5_0::to_q8_0`]).
    fn q5_0_as_q8_0(&self) -> Result<Vec<BlockQ8_0>> {
        self.check(BLOCK, BlockQ5_0::BYTES, "Q5_0")?;
        Ok(BlockQ5_0::parse_all(self.bytes)
            .iter()
            .map(BlockQ5_0::to_q8_0)
            .collect())
    }

    /// Whether the shape is whole blocks of `block_values` and the byte count fits blocks of
    /// `block_bytes`.
    fn check(&self, block_values: usize, block_bytes: usize, format: &str) -> Result<()> {
        let [rows, cols] = self.shape;
        if cols % block_values != 0 || self.bytes.len() != rows * cols / block_values * block_bytes
        {
            return Err(Error::invalid_file(
                self.gguf.path(),
                format!(
                    "tensor `{}` has {} bytes for shape {:?} of {format}",
                    self.name,
                    self.bytes.len(),
                    self.shape,
                ),
            ));
        }
        Ok(())
    }
}

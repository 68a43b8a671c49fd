//! The order in which one step's matrix products add up, row by row: llama.cpp multiplies a
//! prompt's rows in another order than a single token's.

use helixflow_kernels::format::QuantFormat;
use helixflow_kernels::packed::Accumulation;

/// How one step's matrix products add up, input row by input row.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepOrder<'a> {
    /// The order of the packed kernels, for every row.
    pub packed: Accumulation,
    /// One flag per input row: whether the row takes llama.cpp's batched K-quant order
    /// (ggml's tiled kernel, which it runs on batches of eight rows or more) rather than its
    /// single-row one. Empty for none; other formats ignore it.
    pub tiled_rows: &'a [bool],
}

impl From<Accumulation> for StepOrder<'static> {
    fn from(packed: Accumulation) -> Self {
        Self {
            packed,
            tiled_rows: &[],
        }
    }
}

impl StepOrder<'_> {
    /// This order without tiled rows: for products over a selection of the step's rows.
    pub fn untiled(self) -> StepOrder<'static> {
        self.packed.into()
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

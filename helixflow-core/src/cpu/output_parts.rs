//! The outputs of a stacked matrix product, written by parallel tasks.

use super::matmul::with_buffer;

/// Where the rows of one output go: the output's address (kept as an integer so that tasks
/// on other threads may share it), its width, and the first matrix row it takes.
#[derive(Debug, Clone, Copy, Default)]
struct OutputPart {
    address: usize,
    width: usize,
    first_row: usize,
}

/// The outputs of a product of `n` input rows with a matrix whose rows they split in order
/// (`outs[i]` takes `n` rows of its own width), as raw parts: each parallel task writes the
/// values of its own matrix rows, for every input row, into whichever output holds them.
pub(super) struct OutputParts<'a> {
    parts: &'a [OutputPart],
    n: usize,
}

impl OutputParts<'_> {
    /// Runs `f` with the parts of `outs`, which stay exclusively borrowed until it returns.
    pub(super) fn with<R>(
        outs: &mut [&mut [f32]],
        n: usize,
        f: impl FnOnce(&OutputParts<'_>) -> R,
    ) -> R {
        with_buffer(outs.len(), |parts: &mut [OutputPart]| {
            let mut first_row = 0;
            for (part, out) in parts.iter_mut().zip(outs.iter_mut()) {
                let width = out.len() / n;
                *part = OutputPart {
                    address: out.as_mut_ptr() as usize,
                    width,
                    first_row,
                };
                first_row += width;
            }
            f(&OutputParts { parts, n })
        })
    }

    /// Writes matrix row `row`'s value for every input row (`column[t]` for input row `t`).
    ///
    /// # Safety
    /// No other task may write row `row` at the same time.
    pub(super) unsafe fn write_column(&self, row: usize, column: &[f32]) {
        let Some(part) = self.parts.iter().rev().find(|p| p.first_row <= row) else {
            return;
        };
        let out = part.address as *mut f32;
        for (t, &v) in column.iter().enumerate().take(self.n) {
            // SAFETY: `out` is an output of `n` rows of `width` values, exclusively borrowed
            // for this call's lifetime, and `row` lies within its part.
            unsafe { *out.add(t * part.width + row - part.first_row) = v };
        }
    }

    /// Writes matrix rows `first .. first + rows` for every input row `t`, from
    /// `chunk[t * ld .. t * ld + rows]`.
    ///
    /// # Safety
    /// No other task may write these rows at the same time.
    pub(super) unsafe fn write_rows(&self, first: usize, rows: usize, chunk: &[f32], ld: usize) {
        for part in self.parts {
            let start = first.max(part.first_row);
            let end = (first + rows).min(part.first_row + part.width);
            if start >= end {
                continue;
            }
            let out = part.address as *mut f32;
            for t in 0..self.n {
                let from = &chunk[t * ld + start - first..t * ld + end - first];
                // SAFETY: as for `write_column`; the destination is `end - start` values of
                // input row `t` of this part, and `from` lies in another buffer.
                unsafe {
                    let to = out.add(t * part.width + start - part.first_row);
                    std::ptr::copy_nonoverlapping(from.as_ptr(), to, from.len());
                }
            }
        }
    }
}

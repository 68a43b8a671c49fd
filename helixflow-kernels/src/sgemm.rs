//! f32 matrix products against a matrix packed once: an encoder's dense layers (weights packed
//! at load) and its attention (each head's keys and values packed per call).
//!
//! `out += x · Wᵀ` for `W` of `n` rows (outputs) by `k` columns. [`PackedF32`] holds `W` in
//! panels of [`NR`] rows, interleaved so that one step of the inner loop loads sixteen
//! consecutive floats: the sixteen outputs' weights for one input. A micro-kernel keeps a tile
//! of up to [`MR_AVX512`] (AVX-512) or [`MR_AVX2`] (AVX2) input rows by sixteen outputs in
//! registers and runs a block of [`KC`] inputs at a time, so that the panel's block stays in
//! L1 while every tile of rows passes over it. Packing once is what a general GEMM cannot do:
//! it packs its right-hand side again on every call, which at batch 1 costs as much as the
//! product reading the weights. Threads take whole panels (columns of the output), so none
//! writes another's outputs.

use crate::pool::Pool;

/// Outputs per panel.
pub const NR: usize = 16;
/// Inputs per block of the inner loop: a panel's block is `16 × 256` floats, 16 KiB, in L1.
pub const KC: usize = 256;
/// Input rows per AVX-512 tile: twelve accumulators, enough to keep two FMA ports busy.
pub const MR_AVX512: usize = 12;
/// Input rows per AVX2 tile: twelve accumulators of eight lanes, with the two weight vectors
/// and a broadcast, fifteen of the sixteen registers.
pub const MR_AVX2: usize = 6;
/// Input rows per tile of the portable kernel.
const MR_PORTABLE: usize = 4;
/// Input rows per block: a block of `72 × 256` inputs (72 KiB) stays in L2 while every panel
/// passes over it (a multiple of every kernel's tile).
const MC: usize = 72;

/// A matrix `W` (`n × k`, row-major) packed into panels of [`NR`] rows: element `(row, col)`
/// is at `((row / NR) * k + col) * NR + row % NR`, rows past `n` zero.
#[derive(Debug, Clone, Default)]
pub struct PackedF32 {
    n: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedF32 {
    /// Packs the row-major `n × k` matrix `weight`.
    pub fn new(weight: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(weight.len(), n * k, "a {n}x{k} matrix");
        Self::from_fn(n, k, |row, col| weight[row * k + col])
    }

    /// Packs the `n × k` matrix whose element `(row, col)` is `at(row, col)`.
    pub fn from_fn(n: usize, k: usize, at: impl Fn(usize, usize) -> f32) -> Self {
        let mut packed = Self {
            n,
            k,
            data: Vec::new(),
        };
        packed.refill(n, k, at);
        packed
    }

    /// Packs another matrix into this one's storage (no allocation once it is large enough).
    pub fn refill(&mut self, n: usize, k: usize, at: impl Fn(usize, usize) -> f32) {
        let panels = n.div_ceil(NR);
        self.n = n;
        self.k = k;
        self.data.clear();
        self.data.resize(panels * k * NR, 0.0);
        for p in 0..panels {
            let rows = NR.min(n - p * NR);
            let panel = &mut self.data[p * k * NR..(p + 1) * k * NR];
            for (col, step) in panel.chunks_exact_mut(NR).enumerate() {
                for (j, v) in step[..rows].iter_mut().enumerate() {
                    *v = at(p * NR + j, col);
                }
            }
        }
    }

    /// Rows (outputs).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Columns (inputs).
    pub fn k(&self) -> usize {
        self.k
    }

    /// `out += x · Wᵀ`: `x` is `m × k` with rows `ldx` apart, `out` `m × n` with rows `ldo`
    /// apart; on the global pool's threads if `parallel`.
    pub fn matmul_add(
        &self,
        x: &[f32],
        ldx: usize,
        out: &mut [f32],
        ldo: usize,
        m: usize,
        parallel: bool,
    ) {
        let (n, k) = (self.n, self.k);
        assert!(
            ldx >= k
                && ldo >= n
                && (m == 0 || x.len() >= (m - 1) * ldx + k)
                && (m == 0 || out.len() >= (m - 1) * ldo + n),
            "sgemm: {m} rows of {k} (stride {ldx}, {} values) into {n} outputs (stride {ldo}, {} values)",
            x.len(),
            out.len()
        );
        if m == 0 || n == 0 || k == 0 {
            return;
        }
        let panels = n.div_ceil(NR);
        let pool = Pool::global();
        let tasks = if parallel {
            panels.min(pool.threads())
        } else {
            1
        };
        let kernel = Kernel::best();
        let out_ptr = OutPtr(out.as_mut_ptr());
        let x_ptr = InPtr(x.as_ptr());
        let run = |task: usize| {
            let first = panels * task / tasks;
            let last = panels * (task + 1) / tasks;
            // SAFETY: the assertion above bounds every row of `x` and `out` the tiles touch;
            // this task writes only the columns of its own panels.
            unsafe {
                self.panels(kernel, first..last, x_ptr.get(), ldx, out_ptr.get(), ldo, m);
            }
        };
        if tasks == 1 {
            run(0);
        } else {
            pool.for_each(tasks, run);
        }
    }

    /// [`Self::matmul_add`] on this thread, through raw pointers: for callers whose threads
    /// each write their own interleaved part of one output (attention heads).
    ///
    /// # Safety
    /// `x` holds `m` rows of `k` values `ldx` apart, `out` `m` rows of `n` values `ldo` apart,
    /// and no other thread touches those outputs meanwhile.
    pub unsafe fn matmul_add_unshared(
        &self,
        x: *const f32,
        ldx: usize,
        out: *mut f32,
        ldo: usize,
        m: usize,
    ) {
        if m == 0 || self.n == 0 || self.k == 0 {
            return;
        }
        let panels = self.n.div_ceil(NR);
        // SAFETY: the caller's guarantees.
        unsafe { self.panels(Kernel::best(), 0..panels, x, ldx, out, ldo, m) }
    }

    /// The product for panels `panels`, block of inputs by block.
    ///
    /// # Safety
    /// `x` holds `m` rows of `k` values `ldx` apart, `out` `m` rows of `n` values `ldo` apart,
    /// and no other thread writes these panels' columns of `out` meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn panels(
        &self,
        kernel: Kernel,
        panels: std::ops::Range<usize>,
        x: *const f32,
        ldx: usize,
        out: *mut f32,
        ldo: usize,
        m: usize,
    ) {
        let k = self.k;
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            for m0 in (0..m).step_by(MC) {
                let rows = m0..(m0 + MC).min(m);
                for p in panels.clone() {
                    // SAFETY: the caller's guarantees.
                    unsafe { self.panel_rows(kernel, (p, k0, kc), x, ldx, out, ldo, rows.clone()) };
                }
            }
        }
    }

    /// Panel `p`'s block of `kc` inputs from `k0` times rows `rows` of `x`, tile by tile.
    ///
    /// # Safety
    /// As [`Self::panels`].
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn panel_rows(
        &self,
        kernel: Kernel,
        (p, k0, kc): (usize, usize, usize),
        x: *const f32,
        ldx: usize,
        out: *mut f32,
        ldo: usize,
        rows: std::ops::Range<usize>,
    ) {
        let (n, k) = (self.n, self.k);
        let mr = kernel.rows();
        let cols = NR.min(n - p * NR);
        let b = self.data[(p * k + k0) * NR..].as_ptr();
        for r0 in rows.clone().step_by(mr) {
            // SAFETY: the caller's guarantees; the tile lies inside them.
            unsafe {
                let tile = Tile {
                    a: x.add(r0 * ldx + k0),
                    lda: ldx,
                    b,
                    kc,
                    c: out.add(r0 * ldo + p * NR),
                    ldc: ldo,
                    cols,
                };
                kernel.run(mr.min(rows.end - r0), &tile);
            }
        }
    }
}

/// The output pointer, shared by the tasks that write their own columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint columns of the output, which outlives the loop.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// The input pointer, read by every task.
#[derive(Clone, Copy)]
struct InPtr(*const f32);
// SAFETY: only read, while the caller's borrow lasts.
unsafe impl Send for InPtr {}
unsafe impl Sync for InPtr {}

impl InPtr {
    fn get(self) -> *const f32 {
        self.0
    }
}

/// One tile: `rows` input rows from `a` (`lda` apart), the panel block `b` (`kc` steps of
/// [`NR`]), and the `cols` valid outputs of `rows` output rows from `c` (`ldc` apart), to which
/// the products are added.
struct Tile {
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
}

/// The micro-kernels this CPU can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if crate::features::has_avx512f() {
                return Kernel::Avx512;
            }
            if crate::features::has_avx2_fma() {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    fn rows(self) -> usize {
        match self {
            Kernel::Portable => MR_PORTABLE,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => MR_AVX2,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => MR_AVX512,
        }
    }

    /// Runs the tile with `rows` (at most [`Self::rows`]) rows.
    ///
    /// # Safety
    /// The tile's pointers cover its rows, steps and columns.
    unsafe fn run(self, rows: usize, t: &Tile) {
        macro_rules! by_rows {
            ($kernel:ident, $($r:literal)+) => {
                match rows {
                    $($r => $kernel::<$r>(t),)+
                    _ => unreachable!("at most {} rows", self.rows()),
                }
            };
        }
        // SAFETY: the caller's guarantee; `best` chose a kernel this CPU supports.
        unsafe {
            match self {
                Kernel::Portable => by_rows!(portable, 1 2 3 4),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => by_rows!(avx2, 1 2 3 4 5 6),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512 => by_rows!(avx512, 1 2 3 4 5 6 7 8 9 10 11 12),
            }
        }
    }
}

/// Adds the `R × NR` tile `acc` into the tile's valid columns.
#[inline(always)]
unsafe fn add_into<const R: usize>(t: &Tile, acc: &[[f32; NR]; R]) {
    for (r, row) in acc.iter().enumerate() {
        // SAFETY: the tile's `cols` outputs of row `r` lie inside the caller's output.
        let c = unsafe { std::slice::from_raw_parts_mut(t.c.add(r * t.ldc), t.cols) };
        for (o, &v) in c.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// The portable micro-kernel.
unsafe fn portable<const R: usize>(t: &Tile) {
    let mut acc = [[0f32; NR]; R];
    for kk in 0..t.kc {
        // SAFETY: the tile covers `kc` steps of the panel and of each row.
        let b = unsafe { std::slice::from_raw_parts(t.b.add(kk * NR), NR) };
        for (r, row) in acc.iter_mut().enumerate() {
            let a = unsafe { *t.a.add(r * t.lda + kk) };
            for (o, &w) in row.iter_mut().zip(b) {
                *o = a.mul_add(w, *o);
            }
        }
    }
    // SAFETY: the caller's guarantee.
    unsafe { add_into(t, &acc) };
}

/// The AVX2 micro-kernel: two vectors of eight outputs per row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<const R: usize>(t: &Tile) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    // SAFETY (the loads): the tile covers `kc` steps of the panel and of each row.
    for kk in 0..t.kc {
        let (b0, b1) = unsafe {
            let b = t.b.add(kk * NR);
            (_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8)))
        };
        for (r, pair) in acc.iter_mut().enumerate() {
            let a = unsafe { _mm256_broadcast_ss(&*t.a.add(r * t.lda + kk)) };
            pair[0] = _mm256_fmadd_ps(a, b0, pair[0]);
            pair[1] = _mm256_fmadd_ps(a, b1, pair[1]);
        }
    }
    if t.cols == NR {
        for (r, pair) in acc.iter().enumerate() {
            // SAFETY: the row's sixteen outputs lie inside the caller's output.
            unsafe {
                let c = t.c.add(r * t.ldc);
                _mm256_storeu_ps(c, _mm256_add_ps(_mm256_loadu_ps(c), pair[0]));
                _mm256_storeu_ps(c.add(8), _mm256_add_ps(_mm256_loadu_ps(c.add(8)), pair[1]));
            }
        }
        return;
    }
    let mut spilled = [[0f32; NR]; R];
    for (row, pair) in spilled.iter_mut().zip(&acc) {
        // SAFETY: `row` is sixteen writable floats.
        unsafe {
            _mm256_storeu_ps(row.as_mut_ptr(), pair[0]);
            _mm256_storeu_ps(row.as_mut_ptr().add(8), pair[1]);
        }
    }
    // SAFETY: the caller's guarantee.
    unsafe { add_into(t, &spilled) };
}

/// The AVX-512 micro-kernel: one vector of sixteen outputs per row, the last panel's missing
/// outputs masked off.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512<const R: usize>(t: &Tile) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); R];
    // SAFETY (the loads): the tile covers `kc` steps of the panel and of each row.
    for kk in 0..t.kc {
        let b = unsafe { _mm512_loadu_ps(t.b.add(kk * NR)) };
        for (r, sum) in acc.iter_mut().enumerate() {
            let a = unsafe { _mm512_set1_ps(*t.a.add(r * t.lda + kk)) };
            *sum = _mm512_fmadd_ps(a, b, *sum);
        }
    }
    let mask: __mmask16 = if t.cols == NR {
        0xffff
    } else {
        (1u16 << t.cols) - 1
    };
    for (r, sum) in acc.iter().enumerate() {
        // SAFETY: the masked lanes are the row's valid outputs, inside the caller's output.
        unsafe {
            let c = t.c.add(r * t.ldc);
            let old = _mm512_maskz_loadu_ps(mask, c);
            _mm512_mask_storeu_ps(c, mask, _mm512_add_ps(old, *sum));
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Every kernel against the f64 product, for shapes with partial panels, partial tiles of
    /// every size, several input blocks and strided rows; the outputs' other columns untouched.
    #[test]
    fn products_match_the_f64_reference_on_every_kernel() {
        let mut rng = StdRng::seed_from_u64(3);
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut kernels = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if crate::features::has_avx2_fma() {
                kernels.push(Kernel::Avx2);
            }
            if crate::features::has_avx512f() {
                kernels.push(Kernel::Avx512);
            }
        }
        let shapes = [
            (1, 1, 1),
            (15, 384, 384),
            (13, 37, 600),
            (30, 16, 256),
            (7, 50, 3),
            (150, 40, 300),
        ];
        for (m, n, k) in shapes {
            let (ldx, ldo) = (k + 3, n + 5);
            let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let x: Vec<f32> = (0..m * ldx)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let start: Vec<f32> = (0..m * ldo)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let packed = PackedF32::new(&w, n, k);
            for &kernel in &kernels {
                for parallel in [false, true] {
                    let mut out = start.clone();
                    let (panels, tasks) = (n.div_ceil(NR), if parallel { 2 } else { 1 });
                    for task in 0..tasks {
                        let range = panels * task / tasks..panels * (task + 1) / tasks;
                        // SAFETY: the buffers hold the shapes given.
                        unsafe {
                            packed.panels(kernel, range, x.as_ptr(), ldx, out.as_mut_ptr(), ldo, m)
                        };
                    }
                    for r in 0..m {
                        for j in 0..ldo {
                            let got = out[r * ldo + j];
                            if j >= n {
                                assert_eq!(got, start[r * ldo + j], "{kernel:?} wrote column {j}");
                                continue;
                            }
                            let want = f64::from(start[r * ldo + j])
                                + (0..k)
                                    .map(|c| f64::from(x[r * ldx + c]) * f64::from(w[j * k + c]))
                                    .sum::<f64>();
                            assert!(
                                (f64::from(got) - want).abs() < 1e-4 * (k as f64).sqrt(),
                                "{kernel:?} {m}x{n}x{k} [{r}, {j}]: {got} vs {want}"
                            );
                        }
                    }
                }
            }
            // The public entry point agrees with the kernels.
            let mut out = start.clone();
            packed.matmul_add(&x, ldx, &mut out, ldo, m, true);
            let mut alone = start.clone();
            packed.matmul_add(&x, ldx, &mut alone, ldo, m, false);
            assert_eq!(out, alone);
        }
    }

    #[test]
    fn refilling_packs_another_matrix() {
        let mut p = PackedF32::from_fn(3, 2, |r, c| (r * 2 + c) as f32);
        p.refill(17, 1, |r, _| r as f32);
        let x = [1.0f32];
        let mut out = vec![0f32; 17];
        p.matmul_add(&x, 1, &mut out, 17, 1, false);
        assert_eq!(out, (0..17).map(|r| r as f32).collect::<Vec<_>>());
    }
}

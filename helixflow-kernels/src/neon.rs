//! NEON kernels of [`dot_matrix`](crate::dot::dot_matrix) for aarch64, bit-identical to
//! [`dot_scalar`](crate::dot::dot_scalar).
//!
//! The reference's eight lanes are two `float32x4_t`: lanes 0..4 take the products of values
//! 0..16 of a block, lanes 4..8 those of values 16..32. The integer sums of four products
//! come from `vmull_s8` and pairwise widening adds, or from one `sdot` where the CPU has the
//! dotprod extension; integer sums are exact, so both give the same numbers. Each block then
//! adds `scale * sum` to its lanes with one `vfmaq_f32` (the reference's `mul_add`), `Q4_1`
//! keeps its scalar chain of `m * s`, and the stored lanes are reduced by [`hsum8`].
//!
//! Tiles share each unpacked weight block between several activation rows, or, for a single
//! activation row, interleave several weight rows, as the AVX2 kernels do.

use std::arch::aarch64::*;
use std::arch::asm;

use crate::dot::SimdDot;
use crate::math::hsum8;
use crate::quant::{ActBlock, BlockQ4_0, BlockQ4_1, BlockQ5_1, BlockQ8_0};

/// Activation rows handled together, sharing each unpacked weight block.
const TILE: usize = 4;
/// Weight rows interleaved for a single activation row, so that their independent chains of
/// multiply-adds hide each other's latency.
const WEIGHT_TILE: usize = 4;

/// Products of 16 signed bytes with 16 signed bytes, lane `k` of the result the sum of
/// products `4k..4k+4`. Both implementations are exact for every pair of `i8` vectors.
pub(crate) trait ByteDot {
    /// The four sums of four products.
    fn dot(x: int8x16_t, y: int8x16_t) -> int32x4_t;
}

/// Plain NEON: `smull`/`smull2` into i16 products (|x·y| ≤ 2^14, so none overflows), then
/// pairwise widening adds into i32.
pub(crate) struct Mull;

impl ByteDot for Mull {
    #[inline(always)]
    fn dot(x: int8x16_t, y: int8x16_t) -> int32x4_t {
        // SAFETY: only inlined into kernels compiled with NEON.
        unsafe {
            let lo = vpaddlq_s16(vmull_s8(vget_low_s8(x), vget_low_s8(y)));
            let hi = vpaddlq_s16(vmull_high_s8(x, y));
            vpaddq_s32(lo, hi)
        }
    }
}

/// The dotprod extension's `sdot`, one instruction. (Its intrinsic `vdotq_s32` is not stable
/// Rust yet, hence the assembly.)
pub(crate) struct Sdot;

impl ByteDot for Sdot {
    #[inline(always)]
    fn dot(x: int8x16_t, y: int8x16_t) -> int32x4_t {
        // SAFETY: only inlined into kernels compiled with NEON and dotprod; the instruction
        // reads and writes registers only.
        unsafe {
            let mut acc = vdupq_n_s32(0);
            asm!(
                "sdot {acc:v}.4s, {x:v}.16b, {y:v}.16b",
                acc = inout(vreg) acc,
                x = in(vreg) x,
                y = in(vreg) y,
                options(pure, nomem, nostack, preserves_flags),
            );
            acc
        }
    }
}

/// An f16 scale widened to f32 with `fcvt`, which base Armv8 floating point has (the
/// conversion is exact, so it equals the reference's `half` conversion).
#[inline(always)]
pub(crate) fn f16_to_f32(bits: u16) -> f32 {
    let out: f32;
    // SAFETY: `fcvt` reads and writes registers only; the f16 is the low half of the input.
    unsafe {
        asm!(
            "fcvt {out:s}, {bits:h}",
            bits = in(vreg) f32::from_bits(u32::from(bits)),
            out = lateout(vreg) out,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    out
}

/// The low and high nibbles of 16 bytes: values 0..16 and 16..32 of a 4-bit block.
#[inline(always)]
fn nibbles(qs: &[u8; 16]) -> [uint8x16_t; 2] {
    // SAFETY: `qs` is 16 readable bytes; only inlined into kernels compiled with NEON.
    unsafe {
        let q = vld1q_u8(qs.as_ptr());
        [vandq_u8(q, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(q)]
    }
}

/// 32 signed bytes as two vectors.
#[inline(always)]
fn load32(qs: &[i8; 32]) -> [int8x16_t; 2] {
    // SAFETY: `qs` is 32 readable bytes; only inlined into kernels compiled with NEON.
    unsafe { [vld1q_s8(qs.as_ptr()), vld1q_s8(qs.as_ptr().add(16))] }
}

/// Weight blocks as 32 signed bytes (two vectors) under an f16 scale, maybe with a minimum.
trait NeonBlock {
    fn scale_bits(&self) -> u16;
    fn values(&self) -> [int8x16_t; 2];
    /// The minimum, for `Q4_1`.
    #[inline(always)]
    fn min(&self) -> Option<f32> {
        None
    }
}

impl NeonBlock for BlockQ4_0 {
    #[inline(always)]
    fn scale_bits(&self) -> u16 {
        self.d
    }
    #[inline(always)]
    fn values(&self) -> [int8x16_t; 2] {
        let [lo, hi] = nibbles(&self.qs);
        // SAFETY: only inlined into kernels compiled with NEON.
        unsafe {
            let eight = vdupq_n_s8(8);
            [
                vsubq_s8(vreinterpretq_s8_u8(lo), eight),
                vsubq_s8(vreinterpretq_s8_u8(hi), eight),
            ]
        }
    }
}

impl NeonBlock for BlockQ4_1 {
    #[inline(always)]
    fn scale_bits(&self) -> u16 {
        self.d
    }
    #[inline(always)]
    fn values(&self) -> [int8x16_t; 2] {
        // Nibbles are 0..16: as signed bytes they are the same numbers.
        let [lo, hi] = nibbles(&self.qs);
        // SAFETY: only inlined into kernels compiled with NEON.
        unsafe { [vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi)] }
    }
    #[inline(always)]
    fn min(&self) -> Option<f32> {
        Some(f16_to_f32(self.m))
    }
}

impl NeonBlock for BlockQ5_1 {
    #[inline(always)]
    fn scale_bits(&self) -> u16 {
        self.d
    }
    #[inline(always)]
    fn values(&self) -> [int8x16_t; 2] {
        // Values are 0..32: as signed bytes they are the same numbers.
        // SAFETY: `qs` is 32 readable bytes; only inlined into kernels compiled with NEON.
        unsafe {
            [
                vld1q_s8(self.qs.as_ptr().cast()),
                vld1q_s8(self.qs.as_ptr().add(16).cast()),
            ]
        }
    }
    #[inline(always)]
    fn min(&self) -> Option<f32> {
        Some(f16_to_f32(self.m))
    }
}

impl NeonBlock for BlockQ8_0 {
    #[inline(always)]
    fn scale_bits(&self) -> u16 {
        self.d
    }
    #[inline(always)]
    fn values(&self) -> [int8x16_t; 2] {
        load32(&self.qs)
    }
}

/// `R` consecutive rows of `nb` blocks from `all`, as slices of exactly `nb` blocks:
/// indexing them by a block index then needs no bounds check in the inner loop.
#[inline(always)]
fn rows<T, const R: usize>(all: &[T], nb: usize) -> [&[T]; R] {
    std::array::from_fn(|r| &all[r * nb..(r + 1) * nb])
}

/// The dot products of `X` weight rows with `R` activation rows, written to `out[x * n + r]`.
#[inline(always)]
fn tile<B: NeonBlock, D: ByteDot, const X: usize, const R: usize>(
    w: &[B],
    nb: usize,
    acts: &[ActBlock],
    out: &mut [f32],
    n: usize,
) {
    let wrows = rows::<B, X>(w, nb);
    let arows = rows::<ActBlock, R>(acts, nb);
    // SAFETY (every block below): only inlined into kernels compiled with NEON.
    let zero = unsafe { vdupq_n_f32(0.0) };
    let mut acc = [[[zero; 2]; R]; X];
    let mut mins = [[0f32; R]; X];
    for b in 0..nb {
        for i in 0..X {
            let xb = &wrows[i][b];
            let d = f16_to_f32(xb.scale_bits());
            let m = xb.min();
            let [x0, x1] = xb.values();
            for r in 0..R {
                let yb = &arows[r][b];
                if let Some(m) = m {
                    // ggml's `summs += m * s`, a scalar chain (its order must be kept).
                    mins[i][r] = m.mul_add(yb.s, mins[i][r]);
                }
                let [y0, y1] = load32(&yb.qs);
                let scale = unsafe { vdupq_n_f32(d * yb.d) };
                let [lo, hi] = &mut acc[i][r];
                *lo = unsafe { vfmaq_f32(*lo, vcvtq_f32_s32(D::dot(x0, y0)), scale) };
                *hi = unsafe { vfmaq_f32(*hi, vcvtq_f32_s32(D::dot(x1, y1)), scale) };
            }
        }
    }
    for i in 0..X {
        for r in 0..R {
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` is 8 writable f32s.
            unsafe {
                vst1q_f32(lanes.as_mut_ptr(), acc[i][r][0]);
                vst1q_f32(lanes.as_mut_ptr().add(4), acc[i][r][1]);
            }
            // `+ 0.0` for the formats without a minimum, exactly as the reference.
            out[i * n + r] = hsum8(&lanes) + mins[i][r];
        }
    }
}

/// Covers the whole product with tiles: [`WEIGHT_TILE`] weight rows at a time for a single
/// activation row, otherwise each weight row with [`TILE`] activation rows at a time, then
/// two, then one.
#[inline(always)]
fn matrix<B: NeonBlock, D: ByteDot>(w: &[B], nb: usize, acts: &[ActBlock], out: &mut [f32]) {
    let n = acts.len() / nb;
    let wr = w.len() / nb;
    let mut first = 0;
    if n == 1 {
        while first + WEIGHT_TILE <= wr {
            tile::<B, D, WEIGHT_TILE, 1>(&w[first * nb..], nb, acts, &mut out[first..], 1);
            first += WEIGHT_TILE;
        }
    }
    for i in first..wr {
        let row = &w[i * nb..(i + 1) * nb];
        let out = &mut out[i * n..(i + 1) * n];
        let mut r = 0;
        while r + TILE <= n {
            tile::<B, D, 1, TILE>(row, nb, &acts[r * nb..], &mut out[r..], n);
            r += TILE;
        }
        while r + 2 <= n {
            tile::<B, D, 1, 2>(row, nb, &acts[r * nb..], &mut out[r..], n);
            r += 2;
        }
        if r < n {
            tile::<B, D, 1, 1>(row, nb, &acts[r * nb..], &mut out[r..], n);
        }
    }
}

macro_rules! simd_dot {
    ($block:ty) => {
        impl SimdDot for $block {
            unsafe fn matrix_neon(
                x: &[Self],
                nb: usize,
                acts: &[ActBlock],
                out: &mut [f32],
                dotprod: bool,
            ) {
                #[target_feature(enable = "neon")]
                fn mull(x: &[$block], nb: usize, acts: &[ActBlock], out: &mut [f32]) {
                    matrix::<$block, Mull>(x, nb, acts, out);
                }
                #[target_feature(enable = "neon,dotprod")]
                fn sdot(x: &[$block], nb: usize, acts: &[ActBlock], out: &mut [f32]) {
                    matrix::<$block, Sdot>(x, nb, acts, out);
                }
                // SAFETY: the caller guarantees NEON, and dotprod if asked for.
                unsafe {
                    if dotprod {
                        sdot(x, nb, acts, out)
                    } else {
                        mull(x, nb, acts, out)
                    }
                }
            }
        }
    };
}

simd_dot!(BlockQ4_0);
simd_dot!(BlockQ4_1);
simd_dot!(BlockQ5_1);
simd_dot!(BlockQ8_0);

#[cfg(test)]
mod tests {
    use half::f16;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::dot::{dot_scalar, Isa, WeightBlock};
    use crate::features::has_neon_dotprod;

    #[test]
    fn dot_matrix_runs_neon() {
        if std::env::var_os("HELIXFLOW_NO_SIMD").is_none() {
            assert!(matches!(Isa::best(), Isa::Neon | Isa::NeonDotprod));
        }
    }

    #[test]
    fn fcvt_widens_every_f16_like_half() {
        for bits in 0..=u16::MAX {
            let (got, want) = (f16_to_f32(bits), f16::from_bits(bits).to_f32());
            if want.is_nan() {
                assert!(got.is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{bits:#06x}");
            }
        }
    }

    #[test]
    fn byte_dots_sum_fours_of_any_bytes() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut cases: Vec<([i8; 16], [i8; 16])> = vec![([-128; 16], [-128; 16])];
        cases.extend((0..200).map(|_| (rng.random(), rng.random())));
        for (x, y) in cases {
            let want: [i32; 4] = std::array::from_fn(|k| {
                (4 * k..4 * k + 4)
                    .map(|i| i32::from(x[i]) * i32::from(y[i]))
                    .sum()
            });
            let mut got = [[0i32; 4]; 2];
            // SAFETY: NEON is part of aarch64; `sdot` only runs where detected.
            unsafe {
                let (vx, vy) = (vld1q_s8(x.as_ptr()), vld1q_s8(y.as_ptr()));
                vst1q_s32(got[0].as_mut_ptr(), Mull::dot(vx, vy));
                if has_neon_dotprod() {
                    #[target_feature(enable = "neon,dotprod")]
                    fn sdot(vx: int8x16_t, vy: int8x16_t, got: &mut [i32; 4]) {
                        // SAFETY: `got` is 4 writable i32s.
                        unsafe { vst1q_s32(got.as_mut_ptr(), Sdot::dot(vx, vy)) };
                    }
                    sdot(vx, vy, &mut got[1]);
                } else {
                    got[1] = want;
                }
            }
            assert_eq!(got, [want; 2], "{x:?} {y:?}");
        }
    }

    /// Both byte-product paths against the reference, with bytes over the whole `i8` range
    /// (activations included, which `quantize_row` keeps within ±127) and scales, minima
    /// and `s` of both signs.
    fn check<W: WeightBlock + SimdDot>(make: impl Fn(&mut StdRng) -> W) {
        let paths: &[bool] = if has_neon_dotprod() {
            &[false, true]
        } else {
            eprintln!("this CPU has no dotprod: only the plain NEON path is tested");
            &[false]
        };
        let mut rng = StdRng::seed_from_u64(11);
        let half = |rng: &mut StdRng| f16::from_f32(rng.random_range(-2f32..2.0)).to_f32();
        for (nb, wrows, rows) in [(1, 1, 1), (3, 5, 1), (2, 9, 1), (5, 2, 7), (4, 3, 4)] {
            let weights: Vec<W> = (0..wrows * nb).map(|_| make(&mut rng)).collect();
            let acts: Vec<ActBlock> = (0..rows * nb)
                .map(|_| ActBlock {
                    d: half(&mut rng),
                    s: half(&mut rng),
                    qs: rng.random(),
                })
                .collect();
            for &dotprod in paths {
                let mut got = vec![0f32; wrows * rows];
                // SAFETY: NEON is part of aarch64; dotprod only where detected.
                unsafe { W::matrix_neon(&weights, nb, &acts, &mut got, dotprod) };
                for (i, got) in got.iter().enumerate() {
                    let (w, r) = (i / rows, i % rows);
                    let want =
                        dot_scalar(&weights[w * nb..(w + 1) * nb], &acts[r * nb..(r + 1) * nb]);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "dotprod {dotprod} nb {nb} {wrows}x{rows} output {i}"
                    );
                }
            }
        }
    }

    fn scale(rng: &mut StdRng) -> u16 {
        f16::from_f32(rng.random_range(-0.05f32..0.05)).to_bits()
    }

    #[test]
    fn q4_0_matches_the_reference_on_both_paths() {
        check(|rng| BlockQ4_0 {
            d: scale(rng),
            qs: rng.random(),
        });
    }

    #[test]
    fn q4_1_matches_the_reference_on_both_paths() {
        check(|rng| BlockQ4_1 {
            d: scale(rng),
            m: scale(rng),
            qs: rng.random(),
        });
    }

    #[test]
    fn q5_1_matches_the_reference_on_both_paths() {
        check(|rng| BlockQ5_1 {
            d: scale(rng),
            m: scale(rng),
            qs: std::array::from_fn(|_| rng.random_range(0u8..32)),
        });
    }

    #[test]
    fn q8_0_matches_the_reference_on_both_paths() {
        check(|rng| BlockQ8_0 {
            d: scale(rng),
            qs: rng.random(),
        });
    }
}

//! NEON kernels of the K-quant dot products, bit-identical to their references.
//!
//! The reference's eight lanes are two `float32x4_t`: in every 32-value group of a superblock,
//! values 0..16 feed lanes 0..4 and values 16..32 lanes 4..8, four values a lane. One byte dot
//! product ([`ByteDot`]: `smull` and pairwise adds, or `sdot`) gives the four lanes' integer
//! sums of 16 values; `vmlaq_n_s32` scales them by their sub-block scale into the superblock's
//! integer sums, which are exact, so their order does not matter. Each superblock then adds
//! `d` times those sums to its lanes with one `vfmaq_n_f32` (the reference's `mul_add`).
//! Tiles of [`TILE`] activation rows share each unpacked weight superblock.

use std::arch::aarch64::*;

use super::scale_min::{Mins, ScaleMin};
use super::{BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
use crate::math::hsum8;
use crate::neon::{f16_to_f32, ByteDot, Mull, Sdot};

/// Activation rows handled together, sharing each unpacked weight superblock.
const TILE: usize = 4;

/// [`super::KQuantKernels::rows_neon`] for `Q4_K`.
///
/// # Safety
/// The CPU must support NEON, and the dotprod extension if `dotprod` is true.
pub(super) unsafe fn q4k_rows(x: &[BlockQ4K], acts: &[BlockQ8K], out: &mut [f32], dotprod: bool) {
    // SAFETY: the caller's guarantee.
    unsafe { scale_min_rows(x, acts, out, dotprod) }
}

/// [`super::KQuantKernels::rows_neon`] for `Q5_K`.
///
/// # Safety
/// The CPU must support NEON, and the dotprod extension if `dotprod` is true.
pub(super) unsafe fn q5k_rows(x: &[BlockQ5K], acts: &[BlockQ8K], out: &mut [f32], dotprod: bool) {
    // SAFETY: the caller's guarantee.
    unsafe { scale_min_rows(x, acts, out, dotprod) }
}

/// The rows of a [`ScaleMin`] format.
///
/// # Safety
/// The CPU must support NEON, and the dotprod extension if `dotprod` is true.
unsafe fn scale_min_rows<B: ScaleMin>(x: &[B], acts: &[BlockQ8K], out: &mut [f32], dotprod: bool) {
    #[target_feature(enable = "neon")]
    fn mull<B: ScaleMin>(x: &[B], acts: &[BlockQ8K], out: &mut [f32]) {
        in_tiles(
            x,
            acts,
            out,
            scale_min_tile::<B, Mull, TILE>,
            scale_min_tile::<B, Mull, 1>,
        );
    }
    #[target_feature(enable = "neon,dotprod")]
    fn sdot<B: ScaleMin>(x: &[B], acts: &[BlockQ8K], out: &mut [f32]) {
        in_tiles(
            x,
            acts,
            out,
            scale_min_tile::<B, Sdot, TILE>,
            scale_min_tile::<B, Sdot, 1>,
        );
    }
    // SAFETY: the caller guarantees the features each function is compiled for.
    unsafe {
        if dotprod {
            sdot(x, acts, out)
        } else {
            mull(x, acts, out)
        }
    }
}

/// [`super::KQuantKernels::rows_neon`] for `Q6_K`.
///
/// # Safety
/// The CPU must support NEON, and the dotprod extension if `dotprod` is true.
pub(super) unsafe fn q6k_rows(x: &[BlockQ6K], acts: &[BlockQ8K], out: &mut [f32], dotprod: bool) {
    #[target_feature(enable = "neon")]
    fn mull(x: &[BlockQ6K], acts: &[BlockQ8K], out: &mut [f32]) {
        in_tiles(x, acts, out, q6k_tile::<Mull, TILE>, q6k_tile::<Mull, 1>);
    }
    #[target_feature(enable = "neon,dotprod")]
    fn sdot(x: &[BlockQ6K], acts: &[BlockQ8K], out: &mut [f32]) {
        in_tiles(x, acts, out, q6k_tile::<Sdot, TILE>, q6k_tile::<Sdot, 1>);
    }
    // SAFETY: the caller guarantees the features each function is compiled for.
    unsafe {
        if dotprod {
            sdot(x, acts, out)
        } else {
            mull(x, acts, out)
        }
    }
}

/// Runs `tile` over the activation rows [`TILE`] at a time, then `single` over the rest.
#[inline(always)]
fn in_tiles<W>(
    x: &[W],
    acts: &[BlockQ8K],
    out: &mut [f32],
    tile: impl Fn(&[W], &[BlockQ8K], &mut [f32]),
    single: impl Fn(&[W], &[BlockQ8K], &mut [f32]),
) {
    let nb = x.len();
    let mut chunks = out.chunks_exact_mut(TILE);
    let mut row = 0;
    for chunk in &mut chunks {
        tile(x, &acts[row * nb..(row + TILE) * nb], chunk);
        row += TILE;
    }
    for o in chunks.into_remainder().chunks_mut(1) {
        single(x, &acts[row * nb..(row + 1) * nb], o);
        row += 1;
    }
}

/// The first `R` activation rows of `nb` blocks each, as slices of exactly `nb` blocks.
#[inline(always)]
fn act_rows<const R: usize>(acts: &[BlockQ8K], nb: usize) -> [&[BlockQ8K]; R] {
    std::array::from_fn(|r| &acts[r * nb..(r + 1) * nb])
}

/// 16 activation values from the start of `qs`.
#[inline(always)]
fn load16(qs: &[i8]) -> int8x16_t {
    let qs = &qs[..16];
    // SAFETY: `qs` is 16 readable bytes; only inlined into kernels compiled with NEON.
    unsafe { vld1q_s8(qs.as_ptr()) }
}

/// `d` times the integer sums added to the lanes (`vfmaq`: one rounding, as `mul_add`).
#[inline(always)]
fn add_scaled(acc: &mut [float32x4_t; 2], sums: [int32x4_t; 2], d: f32) {
    // SAFETY: only inlined into kernels compiled with NEON.
    unsafe {
        acc[0] = vfmaq_n_f32(acc[0], vcvtq_f32_s32(sums[0]), d);
        acc[1] = vfmaq_n_f32(acc[1], vcvtq_f32_s32(sums[1]), d);
    }
}

/// The eight lanes of `acc`, stored.
#[inline(always)]
fn lanes(acc: &[float32x4_t; 2]) -> [f32; 8] {
    let mut out = [0f32; 8];
    // SAFETY: `out` is eight writable f32; only inlined into kernels compiled with NEON.
    unsafe {
        vst1q_f32(out.as_mut_ptr(), acc[0]);
        vst1q_f32(out.as_mut_ptr().add(4), acc[1]);
    }
    out
}

/// `R` rows of [`super::scale_min::dot_reference`].
#[inline(always)]
fn scale_min_tile<B: ScaleMin, D: ByteDot, const R: usize>(
    x: &[B],
    acts: &[BlockQ8K],
    out: &mut [f32],
) {
    let rows = act_rows::<R>(acts, x.len());
    // SAFETY (every block below): only inlined into kernels compiled with NEON; every load
    // reads 16 bytes of a slice checked to hold them.
    let zero = unsafe { vdupq_n_f32(0.0) };
    let mut acc = [[zero; 2]; R];
    let mut acc_m = [zero; R];
    let mut summs = [0f32; R];
    for (b, xb) in x.iter().enumerate() {
        let xd = f16_to_f32(xb.d());
        let xmin = f16_to_f32(xb.dmin());
        let sm = xb.scales_and_mins();
        let mut sumi = [[unsafe { vdupq_n_s32(0) }; 2]; R];
        for j in 0..4 {
            // Sub-block 2j, then sub-block 2j + 1, two vectors each.
            let [low, high] = xb.values_neon(j);
            let (sc_low, sc_high) = (i32::from(sm[2 * j]), i32::from(sm[2 * j + 1]));
            for r in 0..R {
                let q8 = &rows[r][b].qs[64 * j..64 * j + 64];
                for half in 0..2 {
                    let y_low = load16(&q8[16 * half..]);
                    let y_high = load16(&q8[32 + 16 * half..]);
                    let s = &mut sumi[r][half];
                    unsafe {
                        *s = vmlaq_n_s32(*s, D::dot(low[half], y_low), sc_low);
                        *s = vmlaq_n_s32(*s, D::dot(high[half], y_high), sc_high);
                    }
                }
            }
        }
        // The mins' products: sub-block s's min times the sum of its 32 activation values,
        // added in pairs into four lanes.
        let mins = unsafe {
            let wide = vmovl_u8(vld1_u8(sm[8..].as_ptr()));
            [
                vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(wide))),
                vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(wide))),
            ]
        };
        for r in 0..R {
            let yb = &rows[r][b];
            let d = yb.d * xd;
            let dmin = -yb.d * xmin;
            unsafe {
                let sums32 = [
                    vpaddlq_s16(vld1q_s16(yb.bsums.as_ptr())),
                    vpaddlq_s16(vld1q_s16(yb.bsums[8..].as_ptr())),
                ];
                let prod = vpaddq_s32(vmulq_s32(mins[0], sums32[0]), vmulq_s32(mins[1], sums32[1]));
                match B::MINS {
                    Mins::FourLanes => {
                        acc_m[r] = vfmaq_n_f32(acc_m[r], vcvtq_f32_s32(prod), dmin);
                    }
                    // An exact integer sum, then one fused multiply-add.
                    Mins::OneSum => summs[r] = dmin.mul_add(vaddvq_s32(prod) as f32, summs[r]),
                }
            }
            add_scaled(&mut acc[r], sumi[r], d);
        }
    }
    for r in 0..R {
        let mut m = [0f32; 4];
        // SAFETY: `m` is four writable f32.
        unsafe { vst1q_f32(m.as_mut_ptr(), acc_m[r]) };
        out[r] = hsum8(&lanes(&acc[r]))
            + match B::MINS {
                Mins::FourLanes => (m[0] + m[2]) + (m[1] + m[3]),
                Mins::OneSum => summs[r],
            };
    }
}

/// `R` rows of [`super::dot_q6k_reference`].
#[inline(always)]
fn q6k_tile<D: ByteDot, const R: usize>(x: &[BlockQ6K], acts: &[BlockQ8K], out: &mut [f32]) {
    let rows = act_rows::<R>(acts, x.len());
    // SAFETY (every block below): only inlined into kernels compiled with NEON; every load
    // reads 16 bytes of a slice checked to hold them.
    let zero = unsafe { vdupq_n_f32(0.0) };
    let mut acc = [[zero; 2]; R];
    for (b, xb) in x.iter().enumerate() {
        let xd = f16_to_f32(xb.d);
        let mut sumi = [[unsafe { vdupq_n_s32(0) }; 2]; R];
        for h in 0..2 {
            // The four 32-value groups of this 128-value half, 16 values a vector, as
            // unsigned q (0..64, so also signed bytes).
            let values = q6k_half(xb, h);
            for r in 0..R {
                let q8 = &rows[r][b].qs[128 * h..128 * h + 128];
                for (k, group) in values.iter().enumerate() {
                    for (half, &v) in group.iter().enumerate() {
                        let y = load16(&q8[32 * k + 16 * half..]);
                        let scale = i32::from(xb.scales[8 * h + 2 * k + half]);
                        let s = &mut sumi[r][half];
                        unsafe { *s = vmlaq_n_s32(*s, D::dot(v, y), scale) };
                    }
                }
            }
        }
        for r in 0..R {
            // The offset of 32: lane l subtracts `32 * sc * bsum` of group l's sub-blocks.
            let yb = &rows[r][b];
            let offset: [i32; 8] = std::array::from_fn(|l| {
                32 * (i32::from(yb.bsums[2 * l]) * i32::from(xb.scales[2 * l])
                    + i32::from(yb.bsums[2 * l + 1]) * i32::from(xb.scales[2 * l + 1]))
            });
            // SAFETY: `offset` holds eight readable i32.
            unsafe {
                sumi[r][0] = vsubq_s32(sumi[r][0], vld1q_s32(offset.as_ptr()));
                sumi[r][1] = vsubq_s32(sumi[r][1], vld1q_s32(offset.as_ptr().add(4)));
            }
            add_scaled(&mut acc[r], sumi[r], yb.d * xd);
        }
    }
    for r in 0..R {
        out[r] = hsum8(&lanes(&acc[r]));
    }
}

/// Half `h` of a `Q6_K` superblock (values `128h..128h + 128`) as four 32-value groups of two
/// vectors, each value `q` (0..64, the offset of 32 not taken off).
#[inline(always)]
fn q6k_half(xb: &BlockQ6K, h: usize) -> [[int8x16_t; 2]; 4] {
    let ql = &xb.ql[64 * h..64 * h + 64];
    let qh = &xb.qh[32 * h..32 * h + 32];
    // SAFETY: only inlined into kernels compiled with NEON; every load reads 16 bytes of a
    // slice checked to hold them.
    unsafe {
        let m4 = vdupq_n_u8(0x0f);
        let m2 = vdupq_n_u8(3);
        let mut out = [[vdupq_n_s8(0); 2]; 4];
        for half in 0..2 {
            let first = vld1q_u8(ql[16 * half..].as_ptr());
            let second = vld1q_u8(ql[32 + 16 * half..].as_ptr());
            let high = vld1q_u8(qh[16 * half..].as_ptr());
            // Group k's low four bits, and its two high bits (qh bits 2k, 2k + 1).
            let low = [
                vandq_u8(first, m4),
                vandq_u8(second, m4),
                vshrq_n_u8::<4>(first),
                vshrq_n_u8::<4>(second),
            ];
            let top = [
                vandq_u8(high, m2),
                vandq_u8(vshrq_n_u8::<2>(high), m2),
                vandq_u8(vshrq_n_u8::<4>(high), m2),
                vshrq_n_u8::<6>(high),
            ];
            for k in 0..4 {
                let q = vorrq_u8(low[k], vshlq_n_u8::<4>(top[k]));
                out[k][half] = vreinterpretq_s8_u8(q);
            }
        }
        out
    }
}

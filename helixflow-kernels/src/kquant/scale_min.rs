//! What `Q4_K` and `Q5_K` share: eight 32-value sub-blocks of unsigned values under 6-bit
//! sub-block scales and mins (ggml's `get_scale_min_k4` packing) and two f16 superblock
//! scales, each weight `q * d * sc - dmin * m`. The formats differ in their values' width and
//! in how ggml's AVX2 kernel adds up the mins' term ([`Mins`]); the reference dot products and
//! the vector kernels here take both from [`ScaleMin`].

use half::f16;

use super::BlockQ8K;
use crate::math::hsum8;

/// How ggml's AVX2 `vec_dot` adds `dmin` times the mins' products into the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mins {
    /// `Q4_K`: four f32 lanes, lane `k` taking `m[2k] * s[2k] + m[2k + 1] * s[2k + 1]` with a
    /// fused multiply-add per superblock, reduced `(m0 + m2) + (m1 + m3)` at the end.
    FourLanes,
    /// `Q5_K`: the whole superblock's integer sum `Σ m[s] * s[s]`, added into one f32 with a
    /// fused multiply-add (ggml's `summs += dmin * sum`, which the compiler contracts).
    OneSum,
}

/// A superblock format with [`scales_and_mins_k4`] scales and mins.
pub trait ScaleMin: Copy + Send + Sync {
    /// How the lanes order adds the mins' term.
    const MINS: Mins;

    /// The superblock scale of the sub-block scales and that of the mins (f16 bits), and the
    /// twelve bytes of packed scales and mins.
    fn header(&self) -> (u16, u16, &[u8; 12]);
    /// Superblock scale of the sub-block scales, f16 bits.
    #[inline(always)]
    fn d(&self) -> u16 {
        self.header().0
    }
    /// Superblock scale of the sub-block mins, f16 bits.
    #[inline(always)]
    fn dmin(&self) -> u16 {
        self.header().1
    }
    /// The eight sub-block scales followed by the eight sub-block mins.
    #[inline(always)]
    fn scales_and_mins(&self) -> [u8; 16] {
        scales_and_mins_k4(self.header().2)
    }
    /// Value `i` (0..256) before scaling, unsigned.
    fn value(&self, i: usize) -> i32;

    /// Values `64j..64j + 32` and `64j + 32..64j + 64` as unsigned bytes. Only called from
    /// kernels compiled with AVX2.
    #[cfg(target_arch = "x86_64")]
    fn values_avx2(&self, j: usize) -> [std::arch::x86_64::__m256i; 2];

    /// Values `64j..64j + 32` (two vectors) and `64j + 32..64j + 64` as bytes. Only called
    /// from kernels compiled with NEON.
    #[cfg(target_arch = "aarch64")]
    fn values_neon(&self, j: usize) -> [[std::arch::aarch64::int8x16_t; 2]; 2];
}

/// The low and the high nibbles of bytes `32j..32j + 32` of `qs` (values `64j..64j + 32` and
/// `64j + 32..64j + 64` of `Q4_K`, and the low four bits of `Q5_K`'s). Only called from kernels
/// compiled with AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn nibbles_avx2(qs: &[u8; 128], j: usize) -> [std::arch::x86_64::__m256i; 2] {
    use std::arch::x86_64::*;
    let bits = &qs[32 * j..32 * j + 32];
    // SAFETY: `bits` is 32 readable bytes, loaded unaligned; only inlined into kernels
    // compiled with AVX2.
    unsafe {
        let bits = _mm256_loadu_si256(bits.as_ptr().cast());
        let m4 = _mm256_set1_epi8(0x0f);
        [
            _mm256_and_si256(bits, m4),
            _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4),
        ]
    }
}

/// [`nibbles_avx2`] with NEON: each 32 values as two vectors. Only called from kernels
/// compiled with NEON.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub(super) fn nibbles_neon(qs: &[u8; 128], j: usize) -> [[std::arch::aarch64::uint8x16_t; 2]; 2] {
    use std::arch::aarch64::*;
    let qs = &qs[32 * j..32 * j + 32];
    // SAFETY: two 16-byte loads of a 32-byte slice; only inlined into kernels compiled with
    // NEON.
    unsafe {
        let bits = [vld1q_u8(qs.as_ptr()), vld1q_u8(qs[16..].as_ptr())];
        let m4 = vdupq_n_u8(0x0f);
        [
            bits.map(|v| vandq_u8(v, m4)),
            bits.map(|v| vshrq_n_u8::<4>(v)),
        ]
    }
}

/// The eight sub-block scales followed by the eight sub-block mins of a 12-byte packing
/// (ggml's `get_scale_min_k4`): the first four of each are the low six bits of bytes 0..4 and
/// 4..8; the last four take their low nibbles from bytes 8..12 and their top two bits from
/// the top bits of bytes 0..4 (scales) and 4..8 (mins).
///
/// Computed four bytes at a time in `u32`s, as ggml's kernels do (a byte at a time, the
/// compiler made a chain of byte extracts and inserts of it that cost a 1B model's decoding a
/// tenth of its time).
#[inline(always)]
pub fn scales_and_mins_k4(q: &[u8; 12]) -> [u8; 16] {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let word = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (a, b, c) = (word(0), word(1), word(2));
    let scales_low = a & LOW6;
    let scales_high = (c & LOW4) | (((a >> 6) & LOW2) << 4);
    let mins_low = b & LOW6;
    let mins_high = ((c >> 4) & LOW4) | (((b >> 6) & LOW2) << 4);
    let mut out = [0u8; 16];
    for (i, w) in [scales_low, scales_high, mins_low, mins_high]
        .into_iter()
        .enumerate()
    {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// The sum of the 32 activation values of sub-block `s` (two of ggml's 16-value `bsums`).
fn sum32(yb: &BlockQ8K, s: usize) -> i32 {
    i32::from(yb.bsums[2 * s]) + i32::from(yb.bsums[2 * s + 1])
}

/// The reference dot product in the order of ggml's AVX2 `vec_dot` of the format:
///
/// - per superblock `d = y.d * x.d` and `dmin = -y.d * x.dmin`;
/// - lane `l` of eight takes the exact integer `sum over sub-blocks s of sc[s] * (sum of
///   q * q8 over values 32s + 4l..32s + 4l + 4)` and adds `d` times it with a fused
///   multiply-add;
/// - the mins' term as [`ScaleMin::MINS`] says;
/// - the result is `hsum8(lanes)` plus the mins' term.
pub fn dot_reference<B: ScaleMin>(x: &[B], y: &[BlockQ8K]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut mins = [0f32; 4];
    let mut summs = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let d = yb.d * f16::from_bits(xb.d()).to_f32();
        let dmin = -yb.d * f16::from_bits(xb.dmin()).to_f32();
        let sm = xb.scales_and_mins();

        let prods: [i32; 4] = std::array::from_fn(|k| {
            i32::from(sm[8 + 2 * k]) * sum32(yb, 2 * k)
                + i32::from(sm[9 + 2 * k]) * sum32(yb, 2 * k + 1)
        });
        match B::MINS {
            Mins::FourLanes => {
                for (acc, prod) in mins.iter_mut().zip(prods) {
                    *acc = dmin.mul_add(prod as f32, *acc);
                }
            }
            Mins::OneSum => summs = dmin.mul_add(prods.iter().sum::<i32>() as f32, summs),
        }

        for (l, lane) in lanes.iter_mut().enumerate() {
            let mut sum = 0i32;
            for (s, &sc) in sm[..8].iter().enumerate() {
                let part: i32 = (32 * s + 4 * l..32 * s + 4 * l + 4)
                    .map(|i| xb.value(i) * i32::from(yb.qs[i]))
                    .sum();
                sum += i32::from(sc) * part;
            }
            *lane = d.mul_add(sum as f32, *lane);
        }
    }
    hsum8(&lanes)
        + match B::MINS {
            Mins::FourLanes => (mins[0] + mins[2]) + (mins[1] + mins[3]),
            Mins::OneSum => summs,
        }
}

/// [`dot_reference`] in the order of ggml's tiled kernel ([`super::KQuantOrder::Tiled`], one
/// instantiation for both formats): per superblock the exact integer sums `s1 = sum of
/// sc * q * q8` and `s2 = sum of m * bsum`, then `r = s1 * x.d` rounded, `r = r - x.dmin * s2`
/// fused, and `acc = acc + r * y.d` fused.
pub fn dot_tiled_reference<B: ScaleMin>(x: &[B], y: &[BlockQ8K]) -> f32 {
    let mut acc = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let sm = xb.scales_and_mins();
        let s1: i32 = (0..8)
            .map(|s| {
                let part: i32 = (32 * s..32 * s + 32)
                    .map(|i| xb.value(i) * i32::from(yb.qs[i]))
                    .sum();
                i32::from(sm[s]) * part
            })
            .sum();
        let s2: i32 = (0..8).map(|s| i32::from(sm[8 + s]) * sum32(yb, s)).sum();
        let r = s1 as f32 * f16::from_bits(xb.d()).to_f32();
        let r = (-f16::from_bits(xb.dmin()).to_f32()).mul_add(s2 as f32, r);
        acc = r.mul_add(yb.d, acc);
    }
    acc
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    /// `tile!(name, Block, features)`: `R` rows of ggml's AVX2 `vec_dot` of `Block` (or, if
    /// `TILED`, of its tiled kernel's order), unpacking each weight superblock once for all
    /// of them, compiled for `features` with `S` scaling and adding the sub-block sums.
    macro_rules! tile {
        ($name:ident, $block:ty, $features:literal) => {
            #[target_feature(enable = $features)]
            fn $name<S: super::super::avx2::ScaledSum, const R: usize, const TILED: bool>(
                x: &[$block],
                acts: &[BlockQ8K],
                out: &mut [f32],
            ) {
                use std::arch::x86_64::*;

                use super::super::avx2::{
                    act_rows, f16_to_f32, hsum4, hsum8, load16, load32, prefetch_ahead, store8,
                    sum_i32x4, sum_i32x8, transpose_sum8,
                };
                use super::super::scale_min::{Mins, ScaleMin};

                let rows = act_rows::<R>(acts, x.len());
                let mut acc = [_mm256_setzero_ps(); R];
                let mut acc_m = [_mm_setzero_ps(); R];
                let mut scalar = [0f32; R];
                // The tiled order's sums of a tile of eight rows, one lane a row.
                let mut tiled8 = _mm256_setzero_ps();
                for (b, xb) in x.iter().enumerate() {
                    prefetch_ahead(xb);
                    let xd = f16_to_f32(xb.d());
                    let xmin = f16_to_f32(xb.dmin());
                    let sm = xb.scales_and_mins();
                    let wide = _mm256_cvtepu8_epi16(load16(&sm));
                    let mins = _mm256_extracti128_si256::<1>(wide);
                    // The eight scales as i16 in both halves, for in-lane shuffles.
                    let scales = _mm256_permute2x128_si256::<0x00>(wide, wide);

                    let mut sumi = [_mm256_setzero_si256(); R];
                    for j in 0..4 {
                        // Each sub-block scale in all sixteen 16-bit lanes, as ggml shuffles
                        // them there: the bytes of i16 lane `s` picked into every lane.
                        // (No closure: it would be compiled without the target features.)
                        let (l, h) = (4 * j as i16, 4 * j as i16 + 2);
                        let pick_l = _mm256_set1_epi16(((l + 1) << 8) | l);
                        let pick_h = _mm256_set1_epi16(((h + 1) << 8) | h);
                        let scale_l = _mm256_shuffle_epi8(scales, pick_l);
                        let scale_h = _mm256_shuffle_epi8(scales, pick_h);
                        let [ql, qh] = xb.values_avx2(j);
                        for r in 0..R {
                            let q8 = &rows[r][b].qs[64 * j..];
                            let p16l = _mm256_maddubs_epi16(ql, load32(q8));
                            let p16h = _mm256_maddubs_epi16(qh, load32(&q8[32..]));
                            // ggml adds the two halves' products before the running sum; integer
                            // sums are exact, so the order does not matter.
                            sumi[r] = S::add(S::add(sumi[r], scale_l, p16l), scale_h, p16h);
                        }
                    }

                    if TILED && R == 8 {
                        // Eight rows' whole-superblock sums reduced together, one lane a
                        // row, and the tiled order's three float operations on all eight
                        // lanes at once: the same operations per row as below, in a vector.
                        let mut prods = [_mm256_setzero_si256(); 8];
                        let mut sums = [_mm256_setzero_si256(); 8];
                        let mut yd = [0f32; 8];
                        for r in 0..8 {
                            let yb = &rows[r][b];
                            let q8sums = load32(&yb.bsums);
                            let q8s = _mm_hadd_epi16(
                                _mm256_castsi256_si128(q8sums),
                                _mm256_extracti128_si256::<1>(q8sums),
                            );
                            prods[r] = _mm256_zextsi128_si256(_mm_madd_epi16(mins, q8s));
                            sums[r] = sumi[r];
                            yd[r] = yb.d;
                        }
                        let s1 = _mm256_cvtepi32_ps(transpose_sum8(sums));
                        let s2 = _mm256_cvtepi32_ps(transpose_sum8(prods));
                        let part = _mm256_mul_ps(s1, _mm256_set1_ps(xd));
                        let part = _mm256_fmadd_ps(_mm256_set1_ps(-xmin), s2, part);
                        // SAFETY: `yd` is eight readable f32.
                        let yd = unsafe { _mm256_loadu_ps(yd.as_ptr()) };
                        tiled8 = _mm256_fmadd_ps(part, yd, tiled8);
                        continue;
                    }
                    for r in 0..R {
                        let yb = &rows[r][b];
                        let d = yb.d * xd;
                        let dmin = -yb.d * xmin;
                        let q8sums = load32(&yb.bsums);
                        let q8s = _mm_hadd_epi16(
                            _mm256_castsi256_si128(q8sums),
                            _mm256_extracti128_si256::<1>(q8sums),
                        );
                        let prod = _mm_madd_epi16(mins, q8s);
                        if TILED {
                            let part = sum_i32x8(sumi[r]) as f32 * xd;
                            let part = (-xmin).mul_add(sum_i32x4(prod) as f32, part);
                            scalar[r] = part.mul_add(yb.d, scalar[r]);
                            continue;
                        }
                        match <$block as ScaleMin>::MINS {
                            Mins::FourLanes => {
                                acc_m[r] =
                                    _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m[r])
                            }
                            Mins::OneSum => {
                                scalar[r] = dmin.mul_add(sum_i32x4(prod) as f32, scalar[r])
                            }
                        }
                        acc[r] =
                            _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
                    }
                }
                if TILED && R == 8 {
                    return store8(tiled8, out);
                }
                for r in 0..R {
                    out[r] = match (TILED, <$block as ScaleMin>::MINS) {
                        (true, _) => scalar[r],
                        (false, Mins::FourLanes) => hsum8(acc[r]) + hsum4(acc_m[r]),
                        (false, Mins::OneSum) => hsum8(acc[r]) + scalar[r],
                    };
                }
            }
        };
    }
    pub(in crate::kquant) use tile;
}

//! Dot products of one quantised weight row with quantised activation rows.
//!
//! Each product keeps ggml's AVX2 lane layout: lane `j` of an eight-lane f32 accumulator takes
//! the integer sum of values `4j..4j+4` of every block, scaled by the block's two scales with a
//! fused multiply-add; the lanes are then reduced with [`hsum8`]. The scalar functions are the
//! reference; the AVX2 ones compute the same numbers several activation rows at a time.

use half::f16;

use super::features::has_avx2_fma;
use super::math::hsum8;
use super::quant::{ActBlock, BlockQ4_0, BlockQ4_1, BlockQ8_0};

/// A weight block type with a dot product against activation blocks.
pub trait WeightBlock: Copy + Send + Sync {
    /// The value of element `i` (0..32) as a small integer, before scaling.
    fn value(&self, i: usize) -> i32;
    /// The block's scale.
    fn scale(&self) -> f32;
    /// The block's minimum, if the format has one.
    fn min(&self) -> Option<f32> {
        None
    }
}

impl WeightBlock for BlockQ4_0 {
    fn value(&self, i: usize) -> i32 {
        nibble(&self.qs, i) - 8
    }
    fn scale(&self) -> f32 {
        f16::from_bits(self.d).to_f32()
    }
}

impl WeightBlock for BlockQ4_1 {
    fn value(&self, i: usize) -> i32 {
        nibble(&self.qs, i)
    }
    fn scale(&self) -> f32 {
        f16::from_bits(self.d).to_f32()
    }
    fn min(&self) -> Option<f32> {
        Some(f16::from_bits(self.m).to_f32())
    }
}

impl WeightBlock for BlockQ8_0 {
    fn value(&self, i: usize) -> i32 {
        i32::from(self.qs[i])
    }
    fn scale(&self) -> f32 {
        f16::from_bits(self.d).to_f32()
    }
}

fn nibble(qs: &[u8; 16], i: usize) -> i32 {
    if i < 16 {
        i32::from(qs[i] & 0x0f)
    } else {
        i32::from(qs[i - 16] >> 4)
    }
}

/// The reference dot product of one weight row with one activation row.
pub fn dot_scalar<W: WeightBlock>(x: &[W], y: &[ActBlock]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut mins = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        if let Some(m) = xb.min() {
            // ggml's `summs += m * s`, which the compiler contracts into a fused multiply-add.
            mins = m.mul_add(yb.s, mins);
        }
        let scale = xb.scale() * yb.d;
        for (j, lane) in lanes.iter_mut().enumerate() {
            let sum: i32 = (4 * j..4 * j + 4)
                .map(|i| xb.value(i) * i32::from(yb.qs[i]))
                .sum();
            *lane = scale.mul_add(sum as f32, *lane);
        }
    }
    hsum8(&lanes) + mins
}

/// Dot products of one weight row (`nb` blocks) with each of `out.len()` activation rows
/// stored back to back in `acts`.
pub fn dot_rows<W: WeightBlock + SimdDot>(x: &[W], acts: &[ActBlock], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2, FMA and F16C.
        unsafe { W::dot_rows_avx2(x, acts, out) };
        return;
    }
    let nb = x.len();
    for (o, y) in out.iter_mut().zip(acts.chunks_exact(nb)) {
        *o = dot_scalar(x, y);
    }
}

/// Weight blocks with an AVX2 kernel.
pub trait SimdDot: Sized {
    /// [`dot_rows`] with AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_rows_avx2(x: &[Self], acts: &[ActBlock], out: &mut [f32]);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::quant::{ActBlock, BlockQ4_0, BlockQ4_1, BlockQ8_0};
    use super::SimdDot;

    /// Activation rows handled together, sharing each unpacked weight block.
    const TILE: usize = 4;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn f16_to_f32(bits: u16) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }

    /// Weight rows are read once per token, straight from memory: ask for the bytes a few
    /// rows ahead so that the loads of the next rows do not stall.
    #[inline(always)]
    fn prefetch_ahead<T>(block: &T) {
        const AHEAD: usize = 1024;
        let ptr = (block as *const T).cast::<i8>().wrapping_add(AHEAD);
        // SAFETY: a prefetch is a hint; it never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr) };
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
        let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
    }

    /// Unsigned bytes times signed bytes, summed in fours into eight f32 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn mul_sum_us8(ax: __m256i, sy: __m256i) -> __m256 {
        let pairs = _mm256_maddubs_epi16(ax, sy);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), pairs))
    }

    /// Signed bytes times signed bytes, summed in fours into eight f32 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn mul_sum_i8(x: __m256i, y: __m256i) -> __m256 {
        mul_sum_us8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn nibbles(qs: &[u8; 16]) -> __m256i {
        // SAFETY: `qs` is 16 readable bytes; the load is unaligned.
        let low = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
        let both = _mm256_set_m128i(_mm_srli_epi16(low, 4), low);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn load_act(y: &ActBlock) -> __m256i {
        // SAFETY: `qs` is 32 readable bytes; the load is unaligned.
        unsafe { _mm256_loadu_si256(y.qs.as_ptr().cast()) }
    }

    /// The first `R` activation rows of `nb` blocks each, as slices of exactly `nb` blocks:
    /// indexing them by a weight block's index then needs no bounds check in the inner loop.
    #[inline(always)]
    fn act_rows<const R: usize>(acts: &[ActBlock], nb: usize) -> [&[ActBlock]; R] {
        std::array::from_fn(|r| &acts[r * nb..(r + 1) * nb])
    }

    /// Runs `tile::<R>` over the rows in groups of [`TILE`], then one at a time.
    macro_rules! rows_in_tiles {
        ($tile:ident, $x:expr, $acts:expr, $out:expr) => {{
            let nb = $x.len();
            let mut chunks = $out.chunks_exact_mut(TILE);
            let mut row = 0;
            for chunk in &mut chunks {
                $tile::<TILE>($x, &$acts[row * nb..], chunk);
                row += TILE;
            }
            for o in chunks.into_remainder().chunks_mut(1) {
                $tile::<1>($x, &$acts[row * nb..], o);
                row += 1;
            }
        }};
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn q4_1_tile<const R: usize>(x: &[BlockQ4_1], acts: &[ActBlock], out: &mut [f32]) {
        let rows = act_rows::<R>(acts, x.len());
        let mut acc = [_mm256_setzero_ps(); R];
        let mut mins = [0f32; R];
        for (b, xb) in x.iter().enumerate() {
            prefetch_ahead(xb);
            let d = f16_to_f32(xb.d);
            let m = f16_to_f32(xb.m);
            let qx = nibbles(&xb.qs);
            for r in 0..R {
                let yb = &rows[r][b];
                mins[r] = m.mul_add(yb.s, mins[r]);
                let xy = mul_sum_us8(qx, load_act(yb));
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * yb.d), xy, acc[r]);
            }
        }
        for r in 0..R {
            out[r] = hsum(acc[r]) + mins[r];
        }
    }

    /// Blocks whose values unpack to 32 signed bytes under one scale.
    trait SignedBytes {
        fn scale_bits(&self) -> u16;
        fn signed_values(&self) -> __m256i;
    }

    impl SignedBytes for BlockQ4_0 {
        fn scale_bits(&self) -> u16 {
            self.d
        }
        #[inline(always)]
        fn signed_values(&self) -> __m256i {
            // SAFETY: only called from the AVX2 kernels below, inlined into their features.
            unsafe { _mm256_sub_epi8(nibbles(&self.qs), _mm256_set1_epi8(8)) }
        }
    }

    impl SignedBytes for BlockQ8_0 {
        fn scale_bits(&self) -> u16 {
            self.d
        }
        #[inline(always)]
        fn signed_values(&self) -> __m256i {
            // SAFETY: `qs` is 32 readable bytes; the load is unaligned.
            unsafe { _mm256_loadu_si256(self.qs.as_ptr().cast()) }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn signed_tile<B: SignedBytes, const R: usize>(x: &[B], acts: &[ActBlock], out: &mut [f32]) {
        let rows = act_rows::<R>(acts, x.len());
        let mut acc = [_mm256_setzero_ps(); R];
        for (b, xb) in x.iter().enumerate() {
            prefetch_ahead(xb);
            let d = f16_to_f32(xb.scale_bits());
            let qx = xb.signed_values();
            for r in 0..R {
                let yb = &rows[r][b];
                let xy = mul_sum_i8(qx, load_act(yb));
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * yb.d), xy, acc[r]);
            }
        }
        for r in 0..R {
            out[r] = hsum(acc[r]);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn q4_0_tile<const R: usize>(x: &[BlockQ4_0], acts: &[ActBlock], out: &mut [f32]) {
        signed_tile::<BlockQ4_0, R>(x, acts, out);
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn q8_0_tile<const R: usize>(x: &[BlockQ8_0], acts: &[ActBlock], out: &mut [f32]) {
        signed_tile::<BlockQ8_0, R>(x, acts, out);
    }

    impl SimdDot for BlockQ4_1 {
        unsafe fn dot_rows_avx2(x: &[Self], acts: &[ActBlock], out: &mut [f32]) {
            // SAFETY: the caller guarantees the CPU features.
            unsafe { rows_in_tiles!(q4_1_tile, x, acts, out) }
        }
    }

    impl SimdDot for BlockQ4_0 {
        unsafe fn dot_rows_avx2(x: &[Self], acts: &[ActBlock], out: &mut [f32]) {
            // SAFETY: the caller guarantees the CPU features.
            unsafe { rows_in_tiles!(q4_0_tile, x, acts, out) }
        }
    }

    impl SimdDot for BlockQ8_0 {
        unsafe fn dot_rows_avx2(x: &[Self], acts: &[ActBlock], out: &mut [f32]) {
            // SAFETY: the caller guarantees the CPU features.
            unsafe { rows_in_tiles!(q8_0_tile, x, acts, out) }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl<W> SimdDot for W {}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::cpu::quant::{quantize_row, ActFormat, BLOCK};

    fn scale(rng: &mut StdRng) -> u16 {
        f16::from_f32(rng.random_range(-0.05f32..0.05)).to_bits()
    }

    fn activations(rng: &mut StdRng, rows: usize, nb: usize, format: ActFormat) -> Vec<ActBlock> {
        let x: Vec<f32> = (0..rows * nb * BLOCK)
            .map(|_| rng.random_range(-3.0f32..3.0))
            .collect();
        let mut acts = vec![ActBlock::default(); rows * nb];
        for (row, blocks) in x.chunks_exact(nb * BLOCK).zip(acts.chunks_exact_mut(nb)) {
            quantize_row(row, format, blocks);
        }
        acts
    }

    /// The vectorised kernels must give the scalar reference's results bit for bit, for odd
    /// block counts and every tile remainder.
    fn check<W: WeightBlock + SimdDot>(make: impl Fn(&mut StdRng) -> W, format: ActFormat) {
        let mut rng = StdRng::seed_from_u64(7);
        for nb in [1, 2, 3, 18, 48] {
            let weights: Vec<W> = (0..nb).map(|_| make(&mut rng)).collect();
            for rows in 1..=9 {
                let acts = activations(&mut rng, rows, nb, format);
                let mut fast = vec![0f32; rows];
                dot_rows(&weights, &acts, &mut fast);
                for (r, &got) in fast.iter().enumerate() {
                    let want = dot_scalar(&weights, &acts[r * nb..(r + 1) * nb]);
                    assert_eq!(got.to_bits(), want.to_bits(), "nb {nb} rows {rows} row {r}");
                }
            }
        }
    }

    #[test]
    fn q4_0_matches_the_reference() {
        check(
            |rng| BlockQ4_0 {
                d: scale(rng),
                qs: rng.random(),
            },
            ActFormat::Q8_0,
        );
    }

    #[test]
    fn q4_1_matches_the_reference() {
        check(
            |rng| BlockQ4_1 {
                d: scale(rng),
                m: scale(rng),
                qs: rng.random(),
            },
            ActFormat::Q8_1,
        );
    }

    #[test]
    fn q8_0_matches_the_reference() {
        check(
            |rng| {
                let mut qs = [0i8; 32];
                qs.iter_mut()
                    .for_each(|q| *q = rng.random_range(-127i8..=127));
                BlockQ8_0 { d: scale(rng), qs }
            },
            ActFormat::Q8_0,
        );
    }

    #[test]
    fn reference_is_the_dequantised_dot_product() {
        let mut rng = StdRng::seed_from_u64(3);
        let block = BlockQ4_1 {
            d: scale(&mut rng),
            m: scale(&mut rng),
            qs: rng.random(),
        };
        let acts = activations(&mut rng, 1, 1, ActFormat::Q8_1);
        let mut w = [0f32; 32];
        block.dequantize(&mut w);
        let want: f32 = w
            .iter()
            .zip(&acts[0].qs)
            .map(|(&w, &q)| w * q as f32 * acts[0].d)
            .sum();
        let got = dot_scalar(&[block], &acts);
        assert!(
            (got - want).abs() < 1e-3 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
}

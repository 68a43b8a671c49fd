//! Vocabulary-wide loops of the sampler, written so the compiler can vectorise them: a
//! polynomial `exp` (libm's is a call per element) and reductions over independent lanes
//! (a single running sum or max is a serial dependency chain).

#[cfg(target_arch = "x86_64")]
use crate::cpu::features::has_avx2_fma;

/// Lanes of the reductions: enough independent accumulators for SSE/AVX/NEON.
const LANES: usize = 8;

/// `exp(x)` to about 2 ulp for the arguments the sampler uses (`x <= 0` after subtracting a
/// maximum; it is accurate over the whole f32 range too). Returns exactly 0 below -87.3
/// (including -inf), where f32 underflows anyway.
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    // Cephes expf: exp(x) = 2^n · exp(r), n = round(x / ln 2), |r| <= ln 2 / 2.
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    const MIN_ARG: f32 = -87.336_55;
    const MAX_ARG: f32 = 88.376_26;
    let clamped = x.clamp(MIN_ARG, MAX_ARG);
    let shifted = clamped * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let exp_r = p * r * r + r + 1.0;
    // 2^n through the exponent bits. The integer n sits in the low mantissa bits of
    // `shifted`; it lies in [-126, 128] after the clamp, and 2^128 is not an f32, so the scale
    // is applied in two halves.
    let n = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let half = n >> 1;
    // Wrapping ops: no overflow is possible, and overflow checks (debug builds) would stop
    // the loop from vectorising.
    let scale_a = f32::from_bits((half.wrapping_add(127) as u32) << 23);
    let scale_b = f32::from_bits((n.wrapping_sub(half).wrapping_add(127) as u32) << 23);
    let value = exp_r * scale_a * scale_b;
    if x < MIN_ARG {
        0.0
    } else {
        value
    }
}

/// The largest value and whether every value is below +∞ and not NaN.
pub(crate) fn max_and_check(values: &[f32]) -> (f32, bool) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { avx2::max_and_check(values) };
    }
    max_and_check_lanes(values)
}

/// [`max_and_check`] in [`LANES`] lanes, for whichever vectors the build targets.
#[inline(always)]
fn max_and_check_lanes(values: &[f32]) -> (f32, bool) {
    let mut max = [f32::NEG_INFINITY; LANES];
    // NaN < ∞ is false, so one comparison catches both NaN and +∞.
    let mut ok = [true; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..LANES {
            let v = chunk[lane];
            ok[lane] &= v < f32::INFINITY;
            max[lane] = if v > max[lane] { v } else { max[lane] };
        }
    }
    let mut all_max = max.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut all_ok = ok.iter().all(|&o| o);
    for &v in tail {
        all_ok &= v < f32::INFINITY;
        all_max = all_max.max(v);
    }
    (all_max, all_ok)
}

/// `Σ exp(v - max)` over `values`.
pub(crate) fn sum_exp(values: &[f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { avx2::sum_exp(values, max) };
    }
    blocked_sum(values, |v| fast_exp(v - max))
}

/// The vocabulary-wide reductions compiled for AVX2: the same operations in the same order
/// (Rust fuses no multiply-add unasked), eight lanes to a vector instead of SSE's four.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{blocked_sum, fast_exp, max_and_check_lanes};

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn max_and_check(values: &[f32]) -> (f32, bool) {
        max_and_check_lanes(values)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn sum_exp(values: &[f32], max: f32) -> f64 {
        blocked_sum(values, |v| fast_exp(v - max))
    }
}

/// `Σ values`.
pub(crate) fn sum(values: &[f32]) -> f64 {
    blocked_sum(values, |v| v)
}

/// Replaces each score `s` by `exp((s - max) / temperature)`, an unnormalised probability.
pub(crate) fn exp_in_place(values: &mut [f32], max: f32, temperature: f32) {
    for v in values.iter_mut() {
        *v = fast_exp((*v - max) / temperature);
    }
}

/// `Σ f(v)`: f32 lanes within short blocks (fast, and a block's rounding error stays around
/// 1e-5 relative), blocks summed in f64.
#[inline(always)]
fn blocked_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    const BLOCK: usize = 64 * LANES;
    let mut total = 0.0f64;
    for block in values.chunks(BLOCK) {
        let mut sums = [0.0f32; LANES];
        let chunks = block.chunks_exact(LANES);
        let tail = chunks.remainder();
        for chunk in chunks {
            for lane in 0..LANES {
                sums[lane] += f(chunk[lane]);
            }
        }
        let tail_sum: f32 = tail.iter().map(|&v| f(v)).sum();
        total += sums.iter().map(|&s| f64::from(s)).sum::<f64>() + f64::from(tail_sum);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_std_exp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = f64::from(x).exp();
            let got = f64::from(fast_exp(x));
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(fast_exp(0.0), 1.0);
        assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(fast_exp(-100.0), 0.0);
        assert!(fast_exp(88.3).is_finite());
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_avx2_reductions_are_the_portable_ones_bit_for_bit() {
        if !has_avx2_fma() {
            return;
        }
        // 1003 values: whole blocks, a partial block and a tail shorter than the lanes.
        let mut values: Vec<f32> = (0..1003)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.031 - 20.0)
            .collect();
        values[17] = f32::NEG_INFINITY;
        let (max, ok) = max_and_check_lanes(&values);
        // SAFETY: the CPU has AVX2 and FMA.
        let (avx2_max, avx2_ok) = unsafe { avx2::max_and_check(&values) };
        assert_eq!((avx2_max.to_bits(), avx2_ok), (max.to_bits(), ok));
        let portable = blocked_sum(&values, |v| fast_exp(v - max));
        // SAFETY: as above.
        let avx2_sum = unsafe { avx2::sum_exp(&values, max) };
        assert_eq!(avx2_sum.to_bits(), portable.to_bits());
        values[500] = f32::NAN;
        // SAFETY: as above.
        assert!(!unsafe { avx2::max_and_check(&values) }.1);
    }

    #[test]
    fn reductions_match_scalar_loops() {
        let values: Vec<f32> = (0..1003)
            .map(|i| ((i * 37) % 101) as f32 * 0.1 - 5.0)
            .collect();
        let (max, ok) = max_and_check(&values);
        assert!(ok);
        assert_eq!(max, values.iter().cloned().fold(f32::MIN, f32::max));
        let want: f64 = values.iter().map(|&v| f64::from(v - max).exp()).sum();
        assert!((sum_exp(&values, max) - want).abs() / want < 1e-6);
        let plain: f64 = values.iter().map(|&v| f64::from(v)).sum();
        assert!((sum(&values) - plain).abs() < 1e-3);
        let mut weights = values.clone();
        exp_in_place(&mut weights, max, 2.0);
        for (w, v) in weights.iter().zip(&values) {
            let want = (f64::from(v - max) / 2.0).exp();
            assert!((f64::from(*w) - want).abs() <= want * 1e-6);
        }
        for bad in [f32::NAN, f32::INFINITY] {
            let mut with_bad = values.clone();
            with_bad[1001] = bad; // in the tail
            assert!(!max_and_check(&with_bad).1);
            with_bad[1001] = 0.0;
            with_bad[17] = bad; // in a lane
            assert!(!max_and_check(&with_bad).1);
        }
        assert_eq!(max_and_check(&[]), (f32::NEG_INFINITY, true));
    }
}

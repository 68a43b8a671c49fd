//! The element-wise kernels of f32 encoders (BERT): the exact GELU and LayerNorm.
//!
//! Unlike the decoder's kernels these need not reproduce another program's last bits: an
//! encoder's output is a vector compared by cosine, and the references (sentence-transformers
//! on PyTorch) sum in orders of their own. They need to be fast, since a 256-token input runs
//! GELU over some 400 thousand values per layer.

#[cfg(target_arch = "x86_64")]
use crate::features::has_avx2_fma;

/// Abramowitz and Stegun's 7.1.26: `erf(x) = 1 - t·P(t)·exp(-x²)` for `x ≥ 0`, with
/// `t = 1 / (1 + p·x)`; the absolute error is at most 1.5e-7.
const ERF_P: f32 = 0.327_591_1;
const ERF_A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_74,
    1.421_413_8,
    -1.453_152,
    1.061_405_4,
];

/// `x · Φ(x) = x / 2 · (1 + erf(x / √2))`, in place: the GELU of BERT's `hidden_act: "gelu"`
/// (within 1e-7 of the exact function times `|x|`).
pub fn gelu_erf(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { gelu_erf_fma(x) };
        return;
    }
    x.iter_mut().for_each(|v| *v = gelu_erf_one(*v));
}

/// [`gelu_erf`] of one value.
#[inline(always)]
pub fn gelu_erf_one(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / ERF_P.mul_add(z, 1.0);
    let poly = ERF_A[4]
        .mul_add(t, ERF_A[3])
        .mul_add(t, ERF_A[2])
        .mul_add(t, ERF_A[1])
        .mul_add(t, ERF_A[0])
        * t;
    let erf = 1.0 - poly * (-z * z).exp();
    0.5 * x * (1.0 + erf.copysign(x))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_erf_fma(x: &mut [f32]) {
    use std::arch::x86_64::*;
    let whole = x.len() / 8 * 8;
    let c = _mm256_set1_ps;
    let sign = c(-0.0);
    for group in x[..whole].chunks_exact_mut(8) {
        // SAFETY: the group holds eight values.
        unsafe {
            let v = _mm256_loadu_ps(group.as_ptr());
            let z = _mm256_mul_ps(
                _mm256_andnot_ps(sign, v),
                c(std::f32::consts::FRAC_1_SQRT_2),
            );
            let t = _mm256_div_ps(c(1.0), _mm256_fmadd_ps(c(ERF_P), z, c(1.0)));
            let mut poly = _mm256_fmadd_ps(c(ERF_A[4]), t, c(ERF_A[3]));
            poly = _mm256_fmadd_ps(poly, t, c(ERF_A[2]));
            poly = _mm256_fmadd_ps(poly, t, c(ERF_A[1]));
            poly = _mm256_fmadd_ps(poly, t, c(ERF_A[0]));
            poly = _mm256_mul_ps(poly, t);
            let e = crate::math::avx2::v_expf(_mm256_mul_ps(_mm256_xor_ps(z, sign), z));
            let erf = _mm256_fnmadd_ps(poly, e, c(1.0));
            // erf carries x's sign; then x / 2 · (1 + erf).
            let signed = _mm256_or_ps(erf, _mm256_and_ps(v, sign));
            let out = _mm256_mul_ps(_mm256_mul_ps(c(0.5), v), _mm256_add_ps(c(1.0), signed));
            _mm256_storeu_ps(group.as_mut_ptr(), out);
        }
    }
    x[whole..].iter_mut().for_each(|v| *v = gelu_erf_one(*v));
}

/// LayerNorm of each `weight.len()`-wide row of `x`, in place: `(x - mean) / √(var + eps)`
/// times `weight` plus `bias`, the variance the biased one (as PyTorch's).
pub fn layer_norm_rows(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { layer_norm_rows_fma(x, weight, bias, eps) };
        return;
    }
    layer_norm_rows_portable(x, weight, bias, eps);
}

/// [`layer_norm_rows_portable`] compiled with AVX2, so that its eight-way sums vectorise.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn layer_norm_rows_fma(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    layer_norm_rows_portable(x, weight, bias, eps);
}

#[inline(always)]
fn layer_norm_rows_portable(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let width = weight.len();
    if width == 0 {
        return;
    }
    for row in x.chunks_exact_mut(width) {
        let mean = lanes_sum(row, |v| v) / width as f32;
        let var = lanes_sum(row, |v| (v - mean) * (v - mean)) / width as f32;
        let scale = 1.0 / (var + eps).sqrt();
        for ((v, &w), &b) in row.iter_mut().zip(weight).zip(bias) {
            *v = ((*v - mean) * scale).mul_add(w, b);
        }
    }
}

/// The sum of `f(v)` over `row`, in eight interleaved partial sums (which vectorise).
#[inline(always)]
fn lanes_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Taylor series in f64 (|x| ≤ 3) or 1 for larger, as the exact reference.
    fn erf64(x: f64) -> f64 {
        if x.abs() > 5.0 {
            return x.signum();
        }
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn gelu_erf_is_within_its_bound_on_every_path() {
        let xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 / 250.0).collect();
        let mut vector = xs.clone();
        gelu_erf(&mut vector);
        for (&x, &got) in xs.iter().zip(&vector) {
            let want = 0.5 * f64::from(x) * (1.0 + erf64(f64::from(x) / 2f64.sqrt()));
            let one = gelu_erf_one(x);
            for (path, value) in [("vector", got), ("scalar", one)] {
                let err = (f64::from(value) - want).abs();
                assert!(
                    err <= 2e-7 * f64::from(x.abs()).max(1.0),
                    "{path} gelu({x}) = {value}, want {want}"
                );
            }
        }
        let mut odd = [0.5f32, -1.5, 3.0];
        gelu_erf(&mut odd);
        assert_eq!(odd[2], gelu_erf_one(3.0));
    }

    #[test]
    fn layer_norm_normalises_then_scales_and_shifts() {
        let mut x: Vec<f32> = (0..2 * 19).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let weight: Vec<f32> = (0..19).map(|i| 1.0 + i as f32 / 10.0).collect();
        let bias: Vec<f32> = (0..19).map(|i| i as f32 / 100.0).collect();
        let rows = x.clone();
        layer_norm_rows(&mut x, &weight, &bias, 1e-12);
        for (row, out) in rows.chunks(19).zip(x.chunks(19)) {
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / 19.0;
            let var = row
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / 19.0;
            for i in 0..19 {
                let want = (f64::from(row[i]) - mean) / var.sqrt() * f64::from(weight[i])
                    + f64::from(bias[i]);
                assert!(
                    (f64::from(out[i]) - want).abs() < 1e-5,
                    "{} vs {want}",
                    out[i]
                );
            }
        }
    }
}

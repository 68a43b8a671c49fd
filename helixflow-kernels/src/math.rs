//! Element-wise and row kernels: RMSNorm, residual add, rotary embedding (both pair layouts),
//! the gated activations SwiGLU and GeGLU, soft-capping, and ggml's vector exponential with
//! its horizontal sums.

#[cfg(target_arch = "x86_64")]
use crate::features::has_avx2_fma;

/// Sums eight lanes the way ggml's `hsum_float_8` (and llamafile's `hsum`) does:
/// high half plus low half, then the pairs two apart, then the last two.
#[inline(always)]
pub fn hsum8(lanes: &[f32; 8]) -> f32 {
    let quad = [
        lanes[4] + lanes[0],
        lanes[5] + lanes[1],
        lanes[6] + lanes[2],
        lanes[7] + lanes[3],
    ];
    (quad[0] + quad[2]) + (quad[1] + quad[3])
}

/// Sums sixteen lanes the way `_mm512_reduce_add_ps` does (GCC's definition, which ggml's
/// AVX-512 build uses for its dot products and softmax): the high eight lanes onto the low
/// eight, then as [`hsum8`].
#[inline(always)]
pub fn hsum16(lanes: &[f32; 16]) -> f32 {
    let halves: [f32; 8] = std::array::from_fn(|l| lanes[8 + l] + lanes[l]);
    hsum8(&halves)
}

const EXP_SHIFT: f32 = 12_582_912.0; // 0x1.8p23
const LOG2_E: u32 = 0x3fb8_aa3b;
const LN2_LO: u32 = 0x35bf_be8e;
const LN2_HI: u32 = 0x3f31_7200;
const POLY: [u32; 5] = [
    0x3c07_2010,
    0x3d2b_9f17,
    0x3e2a_af33,
    0x3eff_fedb,
    0x3f7f_fff6,
];

/// ggml's vector `expf` (an Arm optimized-routines polynomial, at most ~1.5 ulp from the true
/// value), lane for lane as its AVX2 form computes it. Softmax and SiLU use it, so matching
/// llama.cpp means using it too.
#[inline(always)]
pub fn v_expf(x: f32) -> f32 {
    let f = f32::from_bits;
    let z = x.mul_add(f(LOG2_E), EXP_SHIFT);
    let n = z - EXP_SHIFT;
    let b = (-n).mul_add(f(LN2_LO), (-n).mul_add(f(LN2_HI), x));
    let e = z.to_bits() << 23;
    let k = f(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let j = f(POLY[0])
        .mul_add(b, f(POLY[1]))
        .mul_add(u, f(POLY[2]).mul_add(b, f(POLY[3])))
        .mul_add(u, f(POLY[4]) * b);
    if n.abs() <= 126.0 || n.is_nan() {
        return k.mul_add(j, k);
    }
    // Results whose exponent leaves the normal range: scale in two steps.
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f(g.wrapping_add(0x7f00_0000));
    let s2 = f(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// ggml's vector `expf` as its AVX-512 form computes it: the same polynomial, but its last
/// term is `1 + c·b` rounded on its own and the result scaled by `2ⁿ` exactly (`vscalefps`),
/// where the AVX2 form fuses the `+ 1` into the scaling; the two differ in the last bit now
/// and then.
pub fn v_expf_wide(x: f32) -> f32 {
    let f = f32::from_bits;
    let z = x.mul_add(f(LOG2_E), EXP_SHIFT);
    let n = z - EXP_SHIFT;
    let b = (-n).mul_add(f(LN2_LO), (-n).mul_add(f(LN2_HI), x));
    let u = b * b;
    let j = f(POLY[0])
        .mul_add(b, f(POLY[1]))
        .mul_add(u, f(POLY[2]).mul_add(b, f(POLY[3])))
        .mul_add(u, f(POLY[4]).mul_add(b, 1.0));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    scale_by_power_of_two(j, n as i32)
}

/// `j · 2ⁿ` rounded once, as `vscalefps` computes it, for `|n| ≤ 192`: in two exact steps
/// where `2ⁿ` itself is not a normal f32.
fn scale_by_power_of_two(j: f32, n: i32) -> f32 {
    let power = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    if n < -126 {
        (j * power(n + 100)) * power(-100)
    } else if n > 127 {
        (j * power(n - 100)) * power(100)
    } else {
        j * power(n)
    }
}

/// [`v_expf`] on eight lanes at once, as ggml's AVX2 `ggml_v_expf`.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{EXP_SHIFT, LN2_HI, LN2_LO, LOG2_E, POLY};
    use std::arch::x86_64::*;

    /// The same bits as [`super::v_expf`] in every lane. Lanes whose exponent leaves the
    /// normal range take a second, scaled computation only when there are any: computing it
    /// for every vector (what the compiler makes of the scalar function's branch) runs into
    /// subnormal operands, which cost a microcode assist each on Intel cores.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn v_expf(x: __m256) -> __m256 {
        let c = |bits: u32| _mm256_set1_ps(f32::from_bits(bits));
        let shift = _mm256_set1_ps(EXP_SHIFT);
        let z = _mm256_fmadd_ps(x, c(LOG2_E), shift);
        let n = _mm256_sub_ps(z, shift);
        let b = _mm256_fnmadd_ps(n, c(LN2_LO), _mm256_fnmadd_ps(n, c(LN2_HI), x));
        let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
        let k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_set1_epi32(0x3f80_0000)));
        let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
        let out_of_range = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0));
        let u = _mm256_mul_ps(b, b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(c(POLY[0]), b, c(POLY[1])),
                u,
                _mm256_fmadd_ps(c(POLY[2]), b, c(POLY[3])),
            ),
            u,
            _mm256_mul_ps(c(POLY[4]), b),
        );
        let normal = _mm256_fmadd_ps(k, j, k);
        if _mm256_movemask_ps(out_of_range) == 0 {
            return normal;
        }
        let non_positive = _mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps());
        let g = _mm256_and_si256(
            _mm256_castps_si256(non_positive),
            _mm256_set1_epi32(0x8200_0000u32 as i32),
        );
        let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
        let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
        let scaled = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
        let far = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
        let in_range = _mm256_blendv_ps(normal, scaled, out_of_range);
        _mm256_blendv_ps(in_range, _mm256_mul_ps(s1, s1), far)
    }
}

/// `gate = silu(gate) * up`, with ggml's SiLU `x / (1 + exp(-x))` over its vector `expf`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { swiglu_fma(gate, up) };
        return;
    }
    swiglu_portable(gate, up);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_fma(gate: &mut [f32], up: &[f32]) {
    use std::arch::x86_64::*;
    let len = gate.len().min(up.len());
    let whole = len / 8 * 8;
    let one = _mm256_set1_ps(1.0);
    for i in (0..whole).step_by(8) {
        // SAFETY: `i + 8 <= len` for both slices.
        unsafe {
            let x = _mm256_loadu_ps(gate.as_ptr().add(i));
            let u = _mm256_loadu_ps(up.as_ptr().add(i));
            let e = avx2::v_expf(_mm256_sub_ps(_mm256_setzero_ps(), x));
            let silu = _mm256_div_ps(x, _mm256_add_ps(one, e));
            _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(silu, u));
        }
    }
    swiglu_portable(&mut gate[whole..len], &up[whole..len]);
}

#[inline(always)]
fn swiglu_portable(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = x / (1.0 + v_expf(0.0 - x)) * u;
    }
}

/// [`swiglu`] as ggml's AVX-512 build computes it: SiLU over [`v_expf_wide`].
pub fn swiglu_wide(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = x / (1.0 + v_expf_wide(0.0 - x)) * u;
    }
}

/// The activation between a gated feed-forward block's gate and up projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateActivation {
    /// SiLU: SwiGLU (Llama, Qwen, Phi-3, ...).
    Silu,
    /// SiLU as llama.cpp's AVX-512 build computes it (see [`v_expf_wide`]).
    SiluWide,
    /// GELU, tanh approximation: GeGLU (Gemma).
    GeluTanh,
}

impl GateActivation {
    /// This activation as llama.cpp's build `build` computes it.
    pub fn in_build(self, build: crate::reference::GgmlBuild) -> Self {
        use crate::reference::GgmlBuild;
        match (self, build) {
            (Self::Silu | Self::SiluWide, GgmlBuild::Avx2) => Self::Silu,
            (Self::Silu | Self::SiluWide, GgmlBuild::Avx512) => Self::SiluWide,
            (Self::GeluTanh, _) => Self::GeluTanh,
        }
    }
}

/// `gate = act(gate) * up` with the activation `activation`.
pub fn gated(activation: GateActivation, gate: &mut [f32], up: &[f32]) {
    match activation {
        GateActivation::Silu => swiglu(gate, up),
        GateActivation::SiluWide => swiglu_wide(gate, up),
        GateActivation::GeluTanh => geglu(gate, up),
    }
}

/// `gate = gelu(gate) * up`, as ggml computes it: GELU looked up in a table of its f16 values
/// at every f16 input (the input rounded to f16), except below -10 (0) and from 10 on (the
/// input itself).
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            let half = half::f16::from_f32(x).to_bits();
            half::f16::from_bits(table[usize::from(half)]).to_f32() * u
        };
    }
}

/// GELU (tanh approximation) of every f16 value, rounded to f16: ggml's `ggml_table_gelu_f16`.
fn gelu_table() -> &'static [u16] {
    static TABLE: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| {
                let x = half::f16::from_bits(bits).to_f32();
                half::f16::from_f32(gelu_tanh(x)).to_bits()
            })
            .collect()
    })
}

/// ggml's `ggml_gelu_f32`, `0.5x(1 + tanh(√(2/π)·x·(1 + 0.044715x²)))`, with the inner
/// `1 + a·x·x` fused into one multiply-add as GCC contracts it.
pub fn gelu_tanh(x: f32) -> f32 {
    const GELU_COEF_A: f32 = 0.044715;
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let inner = 1.0 + GELU_COEF_A * x * x;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * inner).tanh())
}

/// Softmax numerators of one score row in place (`exp(s - max)` with [`v_expf`]) and their
/// sum, reduced as ggml does: eight lanes at a time with [`hsum8`], groups added in f64. The
/// row is zero-padded to a multiple of eight, which is what llama.cpp's masked padding adds.
pub fn softmax_numerators(scores: &mut [f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe { softmax_numerators_fma(scores, max) };
    }
    softmax_numerators_portable(scores, max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_numerators_fma(scores: &mut [f32], max: f32) -> f64 {
    use std::arch::x86_64::*;
    let whole = scores.len() / 8 * 8;
    let mut sum = 0f64;
    let max8 = _mm256_set1_ps(max);
    for group in scores[..whole].chunks_exact_mut(8) {
        let mut lanes = [0f32; 8];
        // SAFETY: the group holds eight values, as does `lanes`.
        unsafe {
            let e = avx2::v_expf(_mm256_sub_ps(_mm256_loadu_ps(group.as_ptr()), max8));
            _mm256_storeu_ps(group.as_mut_ptr(), e);
            _mm256_storeu_ps(lanes.as_mut_ptr(), e);
        }
        sum += f64::from(hsum8(&lanes));
    }
    sum + softmax_numerators_portable(&mut scores[whole..], max)
}

/// [`softmax_numerators`] as ggml's AVX-512 build computes them: [`v_expf_wide`], and the
/// sum sixteen lanes at a time with [`hsum16`] (the row zero-padded to a multiple of 16).
pub fn softmax_numerators_wide(scores: &mut [f32], max: f32) -> f64 {
    softmax_numerators_in_groups::<16>(scores, max, v_expf_wide, hsum16)
}

/// Softmax numerators and their sum as llama.cpp built as `build` computes them.
#[inline(always)]
pub fn softmax_numerators_in(
    build: crate::reference::GgmlBuild,
    scores: &mut [f32],
    max: f32,
) -> f64 {
    match build {
        crate::reference::GgmlBuild::Avx2 => softmax_numerators(scores, max),
        crate::reference::GgmlBuild::Avx512 => softmax_numerators_wide(scores, max),
    }
}

#[inline(always)]
fn softmax_numerators_portable(scores: &mut [f32], max: f32) -> f64 {
    softmax_numerators_in_groups::<8>(scores, max, v_expf, hsum8)
}

/// `exp(s - max)` of every score in place, and their sum: `LANES` at a time (the last group
/// zero-padded) reduced by `reduce`, the groups added in f64.
#[inline(always)]
fn softmax_numerators_in_groups<const LANES: usize>(
    scores: &mut [f32],
    max: f32,
    exp: impl Fn(f32) -> f32,
    reduce: impl Fn(&[f32; LANES]) -> f32,
) -> f64 {
    let mut sum = 0f64;
    for group in scores.chunks_mut(LANES) {
        let mut lanes = [0f32; LANES];
        for (lane, s) in lanes.iter_mut().zip(group.iter_mut()) {
            *s = exp(*s - max);
            *lane = *s;
        }
        sum += f64::from(reduce(&lanes));
    }
    sum
}

/// RMSNorm of each `weight.len()`-wide row of `x`, times `weight`, into `out`.
///
/// As ggml: squares in f32, their sum in f64, the mean rounded to f32.
pub fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let width = weight.len();
    if width == 0 {
        return;
    }
    // Each row's sum is a chain of dependent f64 additions in ggml's order, which a single
    // row leaves mostly waiting on the adder's latency: eight rows' chains run side by side.
    const INTERLEAVED: usize = 8;
    let blocks = x
        .chunks(INTERLEAVED * width)
        .zip(out.chunks_mut(INTERLEAVED * width));
    for (rows, outs) in blocks {
        let mut sums = [0f64; INTERLEAVED];
        if rows.len() == INTERLEAVED * width {
            sums = sums_of_squares::<INTERLEAVED>(rows, width);
        } else {
            for (sum, row) in sums.iter_mut().zip(rows.chunks_exact(width)) {
                [*sum] = sums_of_squares::<1>(row, width);
            }
        }
        let rows = rows.chunks_exact(width).zip(outs.chunks_exact_mut(width));
        for ((row, out_row), sum) in rows.zip(sums) {
            let mean = (sum / width as f64) as f32;
            let scale = 1.0 / (mean + eps).sqrt();
            for ((o, &v), &w) in out_row.iter_mut().zip(row).zip(weight) {
                *o = (v * scale) * w;
            }
        }
    }
}

/// Each of the `R` rows' sum of squares (squares in f32, summed in f64 in order).
#[inline(always)]
fn sums_of_squares<const R: usize>(rows: &[f32], width: usize) -> [f64; R] {
    let rows: [&[f32]; R] = std::array::from_fn(|r| &rows[r * width..(r + 1) * width]);
    let mut sums = [0f64; R];
    for i in 0..width {
        for (sum, row) in sums.iter_mut().zip(&rows) {
            *sum += f64::from(row[i] * row[i]);
        }
    }
    sums
}

/// `x += y`, element-wise.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Per-pair cosines and sines of one position, as ggml's rope cache computes them: the angle
/// advances by repeated f32 multiplication with `theta_scale`, divided by each pair's
/// frequency factor.
pub fn rope_cache(pos: usize, theta_scale: f32, freq_factors: &[f32], cache: &mut [(f32, f32)]) {
    let mut theta = pos as f32;
    for (slot, &factor) in cache.iter_mut().zip(freq_factors) {
        let (sin, cos) = (theta / factor).sin_cos();
        *slot = (cos, sin);
        theta *= theta_scale;
    }
}

/// Rotates adjacent pairs of each `head_dim`-wide head's first `2 * cache.len()` values
/// (ggml's `GGML_ROPE_TYPE_NORM`, the layout llama GGUF weights are converted to).
///
/// The products are fused the way GCC contracts ggml's `x0*cos - x1*sin`: the first product
/// into a multiply-add with the rounded second.
pub fn rope_rows(row: &mut [f32], head_dim: usize, cache: &[(f32, f32)]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { rope_rows_fma(row, head_dim, cache) };
        return;
    }
    rope_rows_portable(row, head_dim, cache);
}

/// [`rope_rows`] compiled with FMA, where `mul_add` is one instruction instead of a call.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rope_rows_fma(row: &mut [f32], head_dim: usize, cache: &[(f32, f32)]) {
    rope_rows_portable(row, head_dim, cache);
}

#[inline(always)]
fn rope_rows_portable(row: &mut [f32], head_dim: usize, cache: &[(f32, f32)]) {
    for head in row.chunks_exact_mut(head_dim) {
        for (pair, &(cos, sin)) in head.chunks_exact_mut(2).zip(cache) {
            let (x0, x1) = (pair[0], pair[1]);
            pair[0] = x0.mul_add(cos, -(x1 * sin));
            pair[1] = x0.mul_add(sin, x1 * cos);
        }
    }
}

/// Rotates each `head_dim`-wide head's first `2 * cache.len()` values as ggml's
/// `GGML_ROPE_TYPE_NEOX` does (Qwen, Gemma, Phi-3): pair `i` is values `i` and
/// `i + cache.len()`, not adjacent values. The products are fused as in [`rope_rows`].
pub fn rope_rows_neox(row: &mut [f32], head_dim: usize, cache: &[(f32, f32)]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { rope_rows_neox_fma(row, head_dim, cache) };
        return;
    }
    rope_rows_neox_portable(row, head_dim, cache);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rope_rows_neox_fma(row: &mut [f32], head_dim: usize, cache: &[(f32, f32)]) {
    rope_rows_neox_portable(row, head_dim, cache);
}

#[inline(always)]
fn rope_rows_neox_portable(row: &mut [f32], head_dim: usize, cache: &[(f32, f32)]) {
    let half = cache.len();
    for head in row.chunks_exact_mut(head_dim) {
        let (first, second) = head[..2 * half].split_at_mut(half);
        for ((x0, x1), &(cos, sin)) in first.iter_mut().zip(second.iter_mut()).zip(cache) {
            let (a, b) = (*x0, *x1);
            *x0 = a.mul_add(cos, -(b * sin));
            *x1 = a.mul_add(sin, b * cos);
        }
    }
}

/// `x *= factor`, element-wise (ggml's `ggml_scale`).
pub fn scale(x: &mut [f32], factor: f32) {
    for v in x {
        *v *= factor;
    }
}

/// `x = tanh(x / cap) * cap` element-wise, ggml's soft-capping as three operations (scale by
/// `1 / cap`, `tanh`, scale by `cap`).
pub fn soft_cap(x: &mut [f32], cap: f32) {
    let inverse = 1.0 / cap;
    for v in x {
        *v = (*v * inverse).tanh() * cap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v_expf_is_within_two_ulp_of_exp() {
        // Over the range where results are normal floats.
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (v_expf(x), (x as f64).exp());
            let ulp = f64::from(f32::EPSILON) * want;
            assert!(
                (f64::from(got) - want).abs() <= 2.0 * ulp,
                "exp({x}) = {got}"
            );
            x += 0.0137;
        }
        assert_eq!(v_expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(v_expf(0.0), 1.0);
        assert_eq!(v_expf(-200.0), 0.0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn v_expf_on_eight_lanes_has_the_scalar_bits() {
        use std::arch::x86_64::*;
        if !has_avx2_fma() {
            return;
        }
        // Normal results, both scaled ranges, their edges, infinities and NaN, mixed within
        // vectors so that both of the vector function's paths run.
        let mut xs: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.0577).collect();
        xs.extend([
            -87.3, -87.4, 88.7, 88.8, -103.0, -104.0, -133.0, 133.0, 150.0, -150.0, 1e9, -1e9,
        ]);
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.0, -0.0]);
        xs.extend([126.0f32.next_up() * std::f32::consts::LN_2, -0.5]);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..4000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            xs.push(((rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 400.0);
        }
        for group in xs.chunks(8) {
            let mut lanes = [0f32; 8];
            lanes[..group.len()].copy_from_slice(group);
            let mut got = [0f32; 8];
            // SAFETY: the CPU has AVX2 and FMA; both arrays hold eight values.
            unsafe {
                let v = avx2::v_expf(_mm256_loadu_ps(lanes.as_ptr()));
                _mm256_storeu_ps(got.as_mut_ptr(), v);
            }
            for (x, g) in lanes.iter().zip(got) {
                let want = v_expf(*x);
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "exp({x}): {g} vs {want}"
                );
            }
        }
    }

    /// ggml's AVX-512 `ggml_v_expf`, written with the same intrinsics, against
    /// [`v_expf_wide`] on the CPU's own `vscalefps` (where the CPU has AVX-512).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn v_expf_wide_has_the_bits_of_ggml_avx512_expf() {
        use std::arch::x86_64::*;
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: no AVX-512 on this CPU");
            return;
        }
        #[target_feature(enable = "avx512f")]
        fn ggml_v_expf_512(x: __m512) -> __m512 {
            let c = |bits: u32| _mm512_set1_ps(f32::from_bits(bits));
            let r = _mm512_set1_ps(EXP_SHIFT);
            let z = _mm512_fmadd_ps(x, c(LOG2_E), r);
            let n = _mm512_sub_ps(z, r);
            let b = _mm512_fnmadd_ps(n, c(LN2_LO), _mm512_fnmadd_ps(n, c(LN2_HI), x));
            let d = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_abs_ps(n), _mm512_set1_ps(192.0));
            let u = _mm512_mul_ps(b, b);
            let j = _mm512_fmadd_ps(
                _mm512_fmadd_ps(
                    _mm512_fmadd_ps(c(POLY[0]), b, c(POLY[1])),
                    u,
                    _mm512_fmadd_ps(c(POLY[2]), b, c(POLY[3])),
                ),
                u,
                _mm512_fmadd_ps(c(POLY[4]), b, _mm512_set1_ps(1.0)),
            );
            let res = _mm512_scalef_ps(j, n);
            if d == 0 {
                return res;
            }
            let non_positive = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(n, _mm512_setzero_ps());
            let alt = _mm512_mask_blend_ps(
                non_positive,
                _mm512_set1_ps(f32::INFINITY),
                _mm512_setzero_ps(),
            );
            _mm512_mask_blend_ps(d, res, alt)
        }
        let mut xs: Vec<f32> = (-3000..3000).map(|i| i as f32 * 0.0577).collect();
        xs.extend([
            -87.3,
            -87.4,
            -103.0,
            -104.0,
            -133.0,
            133.0,
            88.8,
            -1e9,
            f32::NEG_INFINITY,
        ]);
        let mut differs_from_avx2 = 0;
        for group in xs.chunks(16) {
            let mut lanes = [0f32; 16];
            lanes[..group.len()].copy_from_slice(group);
            let mut got = [0f32; 16];
            // SAFETY: the CPU has AVX-512F; both arrays hold sixteen values.
            unsafe {
                let v = ggml_v_expf_512(_mm512_loadu_ps(lanes.as_ptr()));
                _mm512_storeu_ps(got.as_mut_ptr(), v);
            }
            for (x, g) in lanes.iter().zip(got) {
                assert_eq!(g.to_bits(), v_expf_wide(*x).to_bits(), "exp({x})");
                differs_from_avx2 += usize::from(g.to_bits() != v_expf(*x).to_bits());
            }
        }
        // The reason the two builds need telling apart.
        assert!(differs_from_avx2 > 0);
    }

    #[test]
    fn hsum16_adds_the_halves_first() {
        let lanes: [f32; 16] = std::array::from_fn(|i| (i + 1) as f32);
        assert_eq!(hsum16(&lanes), 136.0);
        // 1e8 + 1 is lost only if lane 0 meets lane 8 after lane 8's partner is added.
        let mut big = [0f32; 16];
        big[0] = 1e8;
        big[8] = -1e8;
        big[1] = 1.0;
        assert_eq!(hsum16(&big), 1.0);
    }

    #[test]
    fn swiglu_and_softmax_numerators_match_the_portable_bits() {
        let xs: Vec<f32> = (0..203).map(|i| (i as f32 * 0.731).sin() * 40.0).collect();
        let up: Vec<f32> = (0..203).map(|i| (i as f32 * 0.37).cos() * 3.0).collect();
        for len in [0, 1, 7, 8, 9, 64, 203] {
            let (mut got, mut want) = (xs[..len].to_vec(), xs[..len].to_vec());
            swiglu(&mut got, &up[..len]);
            swiglu_portable(&mut want, &up[..len]);
            assert_eq!(got, want, "swiglu of {len}");
            let (mut got, mut want) = (xs[..len].to_vec(), xs[..len].to_vec());
            let max = 40.0;
            let (sum_got, sum_want) = (
                softmax_numerators(&mut got, max),
                softmax_numerators_portable(&mut want, max),
            );
            assert_eq!(got, want, "softmax numerators of {len}");
            assert_eq!(
                sum_got.to_bits(),
                sum_want.to_bits(),
                "softmax sum of {len}"
            );
        }
    }

    #[test]
    fn hsum8_adds_everything() {
        assert_eq!(hsum8(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]), 36.0);
    }

    #[test]
    fn rms_norm_matches_definition() {
        let x = [1.0f32, -2.0, 3.0, 4.0, 0.5, 0.5, 0.5, 0.5];
        let w = [1.0f32, 2.0, 1.0, 0.5];
        let mut out = [0f32; 8];
        rms_norm_rows(&x, &w, 1e-6, &mut out);
        let rms = ((1.0 + 4.0 + 9.0 + 16.0) / 4.0f32 + 1e-6).sqrt();
        assert!((out[1] - (-2.0 / rms * 2.0)).abs() < 1e-6);
        assert!((out[4] - 0.5 / (0.25f32 + 1e-6).sqrt()).abs() < 1e-5);
    }

    #[test]
    fn rms_norm_of_many_rows_is_each_rows_own_in_ggml_order() {
        // 19 rows: two interleaved blocks of eight and a tail of three.
        let width = 37;
        let mut state = 7u32;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 * 8.0 - 4.0
        };
        let x: Vec<f32> = (0..19 * width).map(|_| next()).collect();
        let w: Vec<f32> = (0..width).map(|_| next()).collect();
        let mut out = vec![0f32; x.len()];
        rms_norm_rows(&x, &w, 1e-5, &mut out);
        for (row, got) in x.chunks_exact(width).zip(out.chunks_exact(width)) {
            let mut sum = 0f64;
            for &v in row {
                sum += f64::from(v * v);
            }
            let scale = 1.0 / ((sum / width as f64) as f32 + 1e-5).sqrt();
            let want: Vec<f32> = row.iter().zip(&w).map(|(&v, &w)| (v * scale) * w).collect();
            assert_eq!(got, want.as_slice());
        }
    }

    #[test]
    fn swiglu_matches_definition() {
        let mut g = [0.0f32, 1.0, -3.0, 2.5, -0.5, 7.0, 0.25, -9.0, 4.0];
        let up = [2.0f32, 2.0, 1.0, 1.0, 3.0, -1.0, 2.0, 1.0, 0.5];
        let want: Vec<f32> = g
            .iter()
            .zip(&up)
            .map(|(&x, &u)| x / (1.0 + (-x).exp()) * u)
            .collect();
        swiglu(&mut g, &up);
        for (got, want) in g.iter().zip(want) {
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
    }

    #[test]
    fn softmax_numerators_sum_in_groups_of_eight() {
        let mut s: Vec<f32> = (0..13).map(|i| i as f32 * 0.3).collect();
        let max = 12.0 * 0.3;
        let sum = softmax_numerators(&mut s, max);
        let want: f64 = (0..13).map(|i| (i as f64 * 0.3 - 3.6).exp()).sum();
        assert!((sum - want).abs() < 1e-5);
        assert!((s[12] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn rope_rotates_pairs_by_position() {
        let mut cache = [(0f32, 0f32); 2];
        rope_cache(3, 0.5, &[1.0, 1.0], &mut cache);
        assert!((cache[0].0 - 3f32.cos()).abs() < 1e-7);
        assert!((cache[1].1 - 1.5f32.sin()).abs() < 1e-7);
        let mut row = [1.0f32, 0.0, 0.0, 1.0];
        rope_rows(&mut row, 4, &cache);
        assert!((row[0] - 3f32.cos()).abs() < 1e-6 && (row[1] - 3f32.sin()).abs() < 1e-6);
        assert!((row[2] + 1.5f32.sin()).abs() < 1e-6 && (row[3] - 1.5f32.cos()).abs() < 1e-6);
    }

    /// GeGLU goes through the f16 table inside (-10, 10) and is exact outside it.
    #[test]
    fn geglu_uses_the_f16_table_and_its_limits() {
        let mut gate = [-20.0f32, 12.0, 0.5, -0.75];
        geglu(&mut gate, &[2.0, 3.0, 1.0, 1.0]);
        assert_eq!(gate[0], 0.0);
        assert_eq!(gate[1], 36.0);
        let table = |x: f32| half::f16::from_f32(gelu_tanh(x)).to_f32();
        assert_eq!(gate[2], table(0.5));
        assert_eq!(gate[3], table(-0.75));
        // GELU itself: about 0.3457 at 0.5.
        assert!((gate[2] - 0.3457).abs() < 1e-3, "{}", gate[2]);
    }

    /// NeoX order rotates value `i` with value `i + half` and leaves the unrotated tail of a
    /// partially rotated head alone.
    #[test]
    fn neox_rope_pairs_the_halves() {
        let (cos, sin) = (0.6f32, 0.8f32);
        let mut row = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        rope_rows_neox(&mut row, 6, &[(cos, sin), (1.0, 0.0)]);
        assert_eq!(row[0], 1.0f32.mul_add(cos, -(3.0 * sin)));
        assert_eq!(row[2], 1.0f32.mul_add(sin, 3.0 * cos));
        assert_eq!((row[1], row[3]), (2.0, 4.0));
        assert_eq!((row[4], row[5]), (5.0, 6.0));
    }
}

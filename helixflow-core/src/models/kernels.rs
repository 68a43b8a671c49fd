//! Small CPU kernels of the decoder step: normalisation, activation and attention over f32
//! rows. They work on plain slices so the model can run them over packed rows of several
//! sequences without building tensors.

use half::f16;
use half::slice::HalfFloatSliceExt;

/// RMSNorm of each `weight.len()`-wide row of `x`, times `weight`, into `out`.
///
/// The sum of squares is accumulated in f64 as ggml does, so results match llama.cpp's.
pub fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let width = weight.len();
    for (row, out_row) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let sum: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let mean = (sum / width as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, &v), &w) in out_row.iter_mut().zip(row).zip(weight) {
            *o = (v * scale) * w;
        }
    }
}

/// `x += y`, element-wise.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `gate = silu(gate) * up`, element-wise (the SwiGLU of llama's MLP).
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// The shape of multi-head attention with grouped key/value heads.
#[derive(Debug, Clone, Copy)]
pub struct AttentionGeometry {
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads; each serves `num_heads / num_kv_heads` query heads.
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Score scale, `1/sqrt(head_dim)`.
    pub scale: f32,
}

/// Attention of one query row (all heads) over the first `len` cached positions.
///
/// `keys` and `values` are `[position][kv_head][head_dim]`. Queries and probabilities are
/// rounded to f16 before their dot products, which is what ggml's f16 matmuls do to their
/// f32 operand; that keeps greedy decoding on llama.cpp's path.
pub fn attend_row(
    geo: &AttentionGeometry,
    q_row: &[f32],
    keys: &[f16],
    values: &[f16],
    len: usize,
    out_row: &mut [f32],
) {
    let hd = geo.head_dim;
    let kvw = geo.num_kv_heads * hd;
    let group = geo.num_heads / geo.num_kv_heads;
    let mut scores = vec![0f32; len];
    let mut probs16 = vec![f16::ZERO; len];
    let mut q16 = vec![0f32; hd];
    let mut row32 = vec![0f32; hd];
    for head in 0..geo.num_heads {
        let kv_head = head / group;
        for (dst, &src) in q16.iter_mut().zip(&q_row[head * hd..(head + 1) * hd]) {
            *dst = f16::from_f32(src).to_f32();
        }
        for (pos, score) in scores.iter_mut().enumerate() {
            let start = pos * kvw + kv_head * hd;
            keys[start..start + hd].convert_to_f32_slice(&mut row32);
            *score = dot(&q16, &row32) * geo.scale;
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f64;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += f64::from(*s);
        }
        let inv = (1.0 / sum) as f32;
        for (p, &s) in probs16.iter_mut().zip(&scores) {
            *p = f16::from_f32(s * inv);
        }
        let out = &mut out_row[head * hd..(head + 1) * hd];
        out.fill(0.0);
        for (pos, p) in probs16.iter().enumerate() {
            let p = p.to_f32();
            if p == 0.0 {
                continue;
            }
            let start = pos * kvw + kv_head * hd;
            values[start..start + hd].convert_to_f32_slice(&mut row32);
            for (o, &v) in out.iter_mut().zip(&row32) {
                *o += p * v;
            }
        }
    }
}

/// Dot product with four independent accumulators (lets the compiler vectorise).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for l in 0..8 {
            acc[l] += a[i * 8 + l] * b[i * 8 + l];
        }
    }
    let mut total: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        total += a[i] * b[i];
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn silu_mul_matches_definition() {
        let mut g = [0.0f32, 1.0, -3.0];
        silu_mul(&mut g, &[2.0, 2.0, 1.0]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 2.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
        assert!((g[2] - (-3.0 / (1.0 + 3.0f32.exp()))).abs() < 1e-6);
    }

    #[test]
    fn attention_is_softmax_weighted_values() {
        // Two heads sharing one kv head, three positions, head_dim 2.
        let geo = AttentionGeometry {
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 2,
            scale: 1.0,
        };
        let k: Vec<f16> = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0].map(f16::from_f32).to_vec();
        let v: Vec<f16> = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0].map(f16::from_f32).to_vec();
        let q = [1.0f32, 0.0, 0.0, 0.0];
        let mut out = [0f32; 4];
        attend_row(&geo, &q, &k, &v, 3, &mut out);
        let s = [1.0f32, 0.0, 1.0].map(f32::exp);
        let z: f32 = s.iter().sum();
        let expect0 = (s[0] * 1.0 + s[1] * 3.0 + s[2] * 5.0) / z;
        assert!((out[0] - expect0).abs() < 2e-3, "{} vs {expect0}", out[0]);
        // The second head has a zero query: uniform weights.
        assert!((out[2] - 3.0).abs() < 2e-3);
        assert!((out[3] - 4.0).abs() < 2e-3);
        // Causality: only the first position visible.
        attend_row(&geo, &q, &k, &v, 1, &mut out);
        assert_eq!(out[..2], [1.0, 2.0]);
    }
}

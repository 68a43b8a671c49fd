//! Normalisation layers: RMSNorm and LayerNorm, with ggml's arithmetic.
//!
//! Gemma's RMSNorm multiplies by `1 + w`: its GGUF conversion stores `1 + w` already, and
//! the safetensors loader adds the 1 at load, so one RMSNorm serves both.

use crate::cpu::math;

/// A normalisation of rows of `weight.len()` values.
#[derive(Debug, Clone, PartialEq)]
pub enum Norm {
    /// `x / rms(x) * w`.
    Rms {
        /// Per-value scale.
        weight: Vec<f32>,
        /// Added to the mean square.
        eps: f32,
    },
    /// `(x - mean) / std(x) * w + b`.
    Layer {
        /// Per-value scale.
        weight: Vec<f32>,
        /// Per-value shift, if any.
        bias: Option<Vec<f32>>,
        /// Added to the variance.
        eps: f32,
    },
}

impl Norm {
    /// Row width.
    pub fn width(&self) -> usize {
        match self {
            Self::Rms { weight, .. } | Self::Layer { weight, .. } => weight.len(),
        }
    }

    /// Normalises every row of `x` into `out`.
    pub fn forward(&self, x: &[f32], out: &mut [f32]) {
        match self {
            Self::Rms { weight, eps } => math::rms_norm_rows(x, weight, *eps, out),
            Self::Layer { weight, bias, eps } => layer_norm_rows(x, weight, bias, *eps, out),
        }
    }
}

/// ggml's `ggml_norm` then the weight and bias: the mean and the variance summed in f64 in
/// order, each rounded to f32.
fn layer_norm_rows(x: &[f32], weight: &[f32], bias: &Option<Vec<f32>>, eps: f32, out: &mut [f32]) {
    let width = weight.len();
    if width == 0 {
        return;
    }
    for (row, out_row) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
        let mean = (sum / width as f64) as f32;
        let mut squares = 0f64;
        for (o, &v) in out_row.iter_mut().zip(row) {
            let centred = v - mean;
            *o = centred;
            squares += f64::from(centred * centred);
        }
        let variance = (squares / width as f64) as f32;
        let scale = 1.0 / (variance + eps).sqrt();
        for (o, &w) in out_row.iter_mut().zip(weight) {
            *o = (*o * scale) * w;
        }
        if let Some(bias) = bias {
            for (o, &b) in out_row.iter_mut().zip(bias) {
                *o += b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_centres_and_scales() {
        let norm = Norm::Layer {
            weight: vec![1.0, 1.0, 2.0, 1.0],
            bias: Some(vec![0.0, 0.0, 0.0, 10.0]),
            eps: 0.0,
        };
        let mut out = [0f32; 4];
        norm.forward(&[1.0, 3.0, 1.0, 3.0], &mut out);
        assert_eq!(out, [-1.0, 1.0, -2.0, 11.0]);
    }

    #[test]
    fn rms_norm_divides_by_the_root_mean_square() {
        let norm = Norm::Rms {
            weight: vec![1.0, 0.5],
            eps: 0.0,
        };
        let mut out = [0f32; 2];
        norm.forward(&[3.0, 4.0], &mut out);
        let scale = 1.0 / 12.5f32.sqrt();
        assert_eq!(out, [3.0 * scale, 4.0 * scale * 0.5]);
    }
}

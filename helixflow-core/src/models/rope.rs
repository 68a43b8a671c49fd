//! Rotary position embeddings as ggml computes them: both pair layouts, partial rotation, and
//! the frequency scalings llama.cpp applies (linear, YaRN, and per-pair frequency factors as
//! Llama 3.1's `rope_freqs` tensor gives them).

use crate::cpu::math;

/// Which values of a head rotate together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i + 1)`: ggml's `GGML_ROPE_TYPE_NORM` (Llama and the families
    /// whose GGUF conversion permutes the projections to it).
    Normal,
    /// Halves `(i, i + dim/2)`: ggml's `GGML_ROPE_TYPE_NEOX` (Qwen, Gemma, Phi-3, ...).
    Neox,
}

/// How the rotation frequencies are stretched for contexts beyond the trained one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// None.
    None,
    /// No stretch, but every cosine and sine scaled by `attn_factor` (Phi-3's LongRoPE,
    /// whose stretch is in its frequency factors).
    Scaled {
        /// The scale of every cosine and sine (`rope.scaling.attn_factor`).
        attn_factor: f32,
    },
    /// Every frequency divided by `factor` (position interpolation).
    Linear {
        /// The stretch.
        factor: f32,
    },
    /// YaRN: low frequencies interpolated, high ones kept, with a ramp between them and an
    /// attention temperature.
    Yarn {
        /// The stretch.
        factor: f32,
        /// The context length the model was trained for before the stretch.
        original_context: usize,
        /// Extra scale of the cosines and sines (`rope.scaling.attn_factor`, usually 1).
        attn_factor: f32,
    },
}

/// One rotary embedding: which values rotate, at what frequencies.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    style: RopeStyle,
    /// Rotated values per head (even, at most the head width).
    dim: usize,
    /// `base^(-2/dim)`: each pair's frequency is the previous one's times this.
    theta_scale: f32,
    /// Per pair, the divisor of its angle (1 for all, unless the model has frequency factors).
    freq_factors: Vec<f32>,
    /// `1 / factor` of linear or YaRN scaling, else 1.
    freq_scale: f32,
    /// How much of YaRN's ramp applies (1 with YaRN, else 0).
    ext_factor: f32,
    /// The scale of every cosine and sine.
    attn_factor: f32,
    /// YaRN's ramp, in pair indices.
    corr_dims: [f32; 2],
}

impl Rope {
    /// A rotation of the first `dim` values of each head with base frequency `base`.
    /// `freq_factors`, when given, has `dim / 2` values.
    pub fn new(
        style: RopeStyle,
        dim: usize,
        base: f32,
        scaling: RopeScaling,
        freq_factors: Option<Vec<f32>>,
    ) -> Self {
        let pairs = dim / 2;
        let (freq_scale, ext_factor, attn_factor, corr_dims) = match scaling {
            RopeScaling::None => (1.0, 0.0, 1.0, [0.0, 0.0]),
            RopeScaling::Scaled { attn_factor } => (1.0, 0.0, attn_factor, [0.0, 0.0]),
            RopeScaling::Linear { factor } => (1.0 / factor, 0.0, 1.0, [0.0, 0.0]),
            RopeScaling::Yarn {
                factor,
                original_context,
                attn_factor,
            } => (
                1.0 / factor,
                1.0,
                attn_factor,
                yarn_corr_dims(dim, original_context, base),
            ),
        };
        Self {
            style,
            dim,
            theta_scale: base.powf(-2.0 / dim as f32),
            freq_factors: freq_factors.unwrap_or_else(|| vec![1.0; pairs]),
            freq_scale,
            ext_factor,
            attn_factor,
            corr_dims,
        }
    }

    /// Rotated values per head.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Pairs rotated per head: the length of one position's cache.
    pub fn pairs(&self) -> usize {
        self.dim / 2
    }

    /// The cosine and sine of every pair at position `pos`, into `cache` ([`Self::pairs`]
    /// values), as ggml's rope cache computes them: the angle advances by repeated f32
    /// multiplication with `theta_scale`.
    pub fn fill_cache(&self, pos: usize, cache: &mut [(f32, f32)]) {
        let mut theta = pos as f32;
        for (pair, (slot, &factor)) in cache.iter_mut().zip(&self.freq_factors).enumerate() {
            let extrapolated = theta / factor;
            let interpolated = self.freq_scale * extrapolated;
            let (mut angle, mut mscale) = (interpolated, self.attn_factor);
            if self.ext_factor != 0.0 {
                let ramp = yarn_ramp(self.corr_dims, pair) * self.ext_factor;
                angle = interpolated * (1.0 - ramp) + extrapolated * ramp;
                mscale *= 1.0 + 0.1 * (1.0 / self.freq_scale).ln();
            }
            let (sin, cos) = angle.sin_cos();
            *slot = (cos * mscale, sin * mscale);
            theta *= self.theta_scale;
        }
    }

    /// Rotates every `head_dim`-wide head of `rows` with one position's `cache`.
    pub fn apply(&self, rows: &mut [f32], head_dim: usize, cache: &[(f32, f32)]) {
        match self.style {
            RopeStyle::Normal => math::rope_rows(rows, head_dim, cache),
            RopeStyle::Neox => math::rope_rows_neox(rows, head_dim, cache),
        }
    }
}

/// ggml's `ggml_rope_yarn_corr_dims`: the pair indices between which YaRN's ramp runs.
fn yarn_corr_dims(dim: usize, original_context: usize, base: f32) -> [f32; 2] {
    const BETA_FAST: f32 = 32.0;
    const BETA_SLOW: f32 = 1.0;
    let corr_dim = |rotations: f32| {
        dim as f32 * (original_context as f32 / (rotations * 2.0 * std::f32::consts::PI)).ln()
            / (2.0 * base.ln())
    };
    [
        corr_dim(BETA_FAST).floor().max(0.0),
        corr_dim(BETA_SLOW).ceil().min(dim as f32 - 1.0),
    ]
}

/// ggml's `rope_yarn_ramp` for pair `pair`: 1 below the ramp, 0 above it.
fn yarn_ramp([low, high]: [f32; 2], pair: usize) -> f32 {
    let y = (pair as f32 - low) / (high - low).max(0.001);
    1.0 - y.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without scaling the cache is ggml's plain one: angle `pos · θ^i`, divided by the
    /// pair's frequency factor.
    #[test]
    fn the_plain_cache_is_the_angle_per_pair() {
        let rope = Rope::new(
            RopeStyle::Normal,
            4,
            10_000.0,
            RopeScaling::None,
            Some(vec![1.0, 2.0]),
        );
        let mut cache = [(0.0, 0.0); 2];
        rope.fill_cache(3, &mut cache);
        assert_eq!(cache[0], (3f32.cos(), 3f32.sin()));
        let second = 3.0 * 10_000f32.powf(-0.5) / 2.0;
        assert_eq!(cache[1], (second.cos(), second.sin()));
    }

    /// Linear scaling divides every angle by the factor.
    #[test]
    fn linear_scaling_stretches_positions() {
        let plain = Rope::new(RopeStyle::Neox, 8, 10_000.0, RopeScaling::None, None);
        let linear = Rope::new(
            RopeStyle::Neox,
            8,
            10_000.0,
            RopeScaling::Linear { factor: 4.0 },
            None,
        );
        let (mut a, mut b) = ([(0.0, 0.0); 4], [(0.0, 0.0); 4]);
        plain.fill_cache(2, &mut a);
        linear.fill_cache(8, &mut b);
        for (x, y) in a.iter().zip(&b) {
            assert!((x.0 - y.0).abs() < 1e-6 && (x.1 - y.1).abs() < 1e-6);
        }
    }

    /// YaRN keeps the fastest pairs unscaled and interpolates the slowest.
    #[test]
    fn yarn_ramps_between_extrapolation_and_interpolation() {
        let rope = Rope::new(
            RopeStyle::Normal,
            64,
            10_000.0,
            RopeScaling::Yarn {
                factor: 4.0,
                original_context: 4096,
                attn_factor: 1.0,
            },
            None,
        );
        let [low, high] = rope.corr_dims;
        assert!(0.0 <= low && low < high && high <= 63.0, "{low} {high}");
        assert_eq!(yarn_ramp(rope.corr_dims, 0), 1.0);
        assert_eq!(yarn_ramp(rope.corr_dims, 31), 0.0);
    }
}

//! Pooling: reducing a sequence's token states to one vector, as sentence-transformers'
//! `Pooling` module does, plus the `Normalize` module's L2 normalisation.

use crate::error::{Error, Result};

/// One way to reduce token states to a single vector (a `pooling_mode_*` flag of
/// sentence-transformers' `1_Pooling/config.json`).
///
/// When several modes are enabled, their vectors are concatenated in the order of
/// [`PoolingMode::SENTENCE_TRANSFORMERS_ORDER`], as sentence-transformers does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolingMode {
    /// The first token's state (`[CLS]` for BERT), whatever the mask says.
    Cls,
    /// The element-wise maximum over the real tokens.
    Max,
    /// The mean over the real tokens.
    Mean,
    /// The sum over the real tokens divided by the square root of their count.
    MeanSqrtLen,
    /// The mean over the real tokens weighted by position (1, 2, 3, ...).
    WeightedMean,
    /// The last real token's state.
    LastToken,
}

impl PoolingMode {
    /// The order in which sentence-transformers concatenates enabled modes.
    pub const SENTENCE_TRANSFORMERS_ORDER: [PoolingMode; 6] = [
        PoolingMode::Cls,
        PoolingMode::Max,
        PoolingMode::Mean,
        PoolingMode::MeanSqrtLen,
        PoolingMode::WeightedMean,
        PoolingMode::LastToken,
    ];
}

/// Pools one sequence.
///
/// `states` holds `mask.len()` token states of `dim` floats each, row-major; `mask[i] != 0`
/// marks token `i` as real (anything else is padding and is ignored, except by
/// [`PoolingMode::Cls`], which always takes token 0). The result is the concatenation of each
/// mode's vector, so it has `modes.len() * dim` floats.
///
/// Fails with [`Error::InvalidRequest`] when the shapes disagree, `modes` is empty, or the mask
/// has no real token.
pub fn pool(modes: &[PoolingMode], states: &[f32], dim: usize, mask: &[u32]) -> Result<Vec<f32>> {
    if modes.is_empty() {
        return Err(Error::InvalidRequest("no pooling mode given".into()));
    }
    if dim == 0 || Some(states.len()) != mask.len().checked_mul(dim) {
        return Err(Error::InvalidRequest(format!(
            "pooling expects {} tokens x {dim} floats, got {} floats",
            mask.len(),
            states.len()
        )));
    }
    let rows: Vec<&[f32]> = states.chunks_exact(dim).collect();
    // (position from 1, state) of the real tokens only.
    let real: Vec<(usize, &[f32])> = rows
        .iter()
        .zip(mask)
        .enumerate()
        .filter(|(_, (_, &m))| m != 0)
        .map(|(i, (row, _))| (i + 1, *row))
        .collect();
    let (Some(first), Some(&(_, last))) = (rows.first(), real.last()) else {
        return Err(Error::InvalidRequest(
            "nothing to pool: no real tokens".into(),
        ));
    };

    let mut out = Vec::with_capacity(modes.len() * dim);
    for mode in modes {
        match mode {
            PoolingMode::Cls => out.extend_from_slice(first),
            PoolingMode::LastToken => out.extend_from_slice(last),
            PoolingMode::Max => {
                let mut max = vec![f32::NEG_INFINITY; dim];
                for (_, row) in &real {
                    for (m, &x) in max.iter_mut().zip(*row) {
                        *m = m.max(x);
                    }
                }
                out.extend(max);
            }
            PoolingMode::Mean | PoolingMode::MeanSqrtLen | PoolingMode::WeightedMean => {
                let weight = |position: usize| match mode {
                    PoolingMode::WeightedMean => position as f64,
                    _ => 1.0,
                };
                // f64 accumulators: sums over hundreds of tokens lose bits in f32.
                let mut sum = vec![0f64; dim];
                let mut total_weight = 0f64;
                for &(position, row) in &real {
                    let w = weight(position);
                    total_weight += w;
                    for (s, &x) in sum.iter_mut().zip(row) {
                        *s += w * f64::from(x);
                    }
                }
                let divisor = match mode {
                    PoolingMode::MeanSqrtLen => total_weight.sqrt(),
                    _ => total_weight,
                };
                out.extend(sum.into_iter().map(|s| (s / divisor) as f32));
            }
        }
    }
    Ok(out)
}

/// Scales `vector` to unit L2 norm in place, like `torch.nn.functional.normalize` (a zero vector
/// stays zero).
pub fn l2_normalize(vector: &mut [f32]) {
    let norm = vector
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    // The same floor as torch's default eps, so tiny vectors do not blow up.
    let scale = 1.0 / norm.max(1e-12);
    for x in vector.iter_mut() {
        *x = (f64::from(*x) * scale) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Three tokens of dimension 2; the third is padding.
    const STATES: [f32; 6] = [1.0, -2.0, 3.0, 4.0, 100.0, 100.0];
    const MASK: [u32; 3] = [1, 1, 0];

    fn assert_close(actual: &[f32], expected: &[f32]) {
        assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{actual:?} vs {expected:?}");
        }
    }

    #[test]
    fn mean_ignores_padding() {
        let v = pool(&[PoolingMode::Mean], &STATES, 2, &MASK).unwrap();
        assert_close(&v, &[2.0, 1.0]);
    }

    #[test]
    fn mean_uses_the_mask_not_a_prefix() {
        // A hole in the middle of the mask is honoured too.
        let v = pool(&[PoolingMode::Mean], &STATES, 2, &[1, 0, 1]).unwrap();
        assert_close(&v, &[50.5, 49.0]);
    }

    #[test]
    fn cls_takes_the_first_token() {
        let v = pool(&[PoolingMode::Cls], &STATES, 2, &MASK).unwrap();
        assert_close(&v, &[1.0, -2.0]);
    }

    #[test]
    fn max_ignores_padding() {
        let v = pool(&[PoolingMode::Max], &STATES, 2, &MASK).unwrap();
        assert_close(&v, &[3.0, 4.0]);
    }

    #[test]
    fn mean_sqrt_len_divides_by_root_of_count() {
        let v = pool(&[PoolingMode::MeanSqrtLen], &STATES, 2, &MASK).unwrap();
        let root2 = 2f32.sqrt();
        assert_close(&v, &[4.0 / root2, 2.0 / root2]);
    }

    #[test]
    fn weighted_mean_weights_by_position() {
        // (1*[1,-2] + 2*[3,4]) / 3
        let v = pool(&[PoolingMode::WeightedMean], &STATES, 2, &MASK).unwrap();
        assert_close(&v, &[7.0 / 3.0, 2.0]);
    }

    #[test]
    fn last_token_is_the_last_real_one() {
        let v = pool(&[PoolingMode::LastToken], &STATES, 2, &MASK).unwrap();
        assert_close(&v, &[3.0, 4.0]);
    }

    #[test]
    fn several_modes_are_concatenated_in_the_given_order() {
        let v = pool(&[PoolingMode::Cls, PoolingMode::Mean], &STATES, 2, &MASK).unwrap();
        assert_close(&v, &[1.0, -2.0, 2.0, 1.0]);
    }

    #[test]
    fn bad_shapes_and_empty_masks_are_errors() {
        let bad_shape = pool(&[PoolingMode::Mean], &STATES, 4, &MASK);
        assert!(matches!(bad_shape, Err(Error::InvalidRequest(_))));
        let zero_dim = pool(&[PoolingMode::Mean], &[], 0, &[]);
        assert!(matches!(zero_dim, Err(Error::InvalidRequest(_))));
        let all_padding = pool(&[PoolingMode::Mean], &STATES, 2, &[0, 0, 0]);
        assert!(matches!(all_padding, Err(Error::InvalidRequest(_))));
        let no_modes = pool(&[], &STATES, 2, &MASK);
        assert!(matches!(no_modes, Err(Error::InvalidRequest(_))));
    }

    #[test]
    fn normalisation_gives_unit_norm() {
        let mut v = [3.0, -4.0];
        l2_normalize(&mut v);
        assert_close(&v, &[0.6, -0.8]);
    }

    #[test]
    fn normalising_zero_keeps_zero() {
        let mut v = [0.0, 0.0];
        l2_normalize(&mut v);
        assert_close(&v, &[0.0, 0.0]);
    }
}

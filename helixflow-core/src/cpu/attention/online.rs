//! Attention with an online softmax: one pass over the cached keys and values, each head
//! keeping its running maximum score, the running sum of `exp(score - max)` and the weighted
//! sum of values, rescaled whenever the maximum grows. No buffer of scores or probabilities,
//! and each cache row is read once instead of once per pass.
//!
//! Its results differ from llama.cpp's in the last bits (the probabilities are not rounded to
//! f16, and the sums run in another order), so greedy decoding may part from llama.cpp's
//! tokens after a while; [`super::attend_row`], the default, reproduces them.

use super::{
    head_row, prefetch_row, run_widened, AttentionGeometry, AttentionScratch, AttentionTask, Widen,
    WidenedKernel, PREFETCH_ROWS,
};
use crate::cpu::math::{hsum8, v_expf};

/// [`super::attend_row`]'s attention with an online softmax, into `out_group`.
pub fn attend_row_online(
    geo: &AttentionGeometry,
    task: &AttentionTask<'_>,
    out_group: &mut [f32],
    scratch: &mut AttentionScratch,
) {
    run_widened::<Online>(geo, task, out_group, scratch);
}

/// The online softmax as a [`WidenedKernel`].
struct Online;

impl WidenedKernel for Online {
    #[inline(always)]
    fn run<W: Widen>(
        geo: &AttentionGeometry,
        task: &AttentionTask<'_>,
        out_group: &mut [f32],
        scratch: &mut AttentionScratch,
    ) {
        let hd = geo.head_dim;
        let group = geo.num_heads / geo.num_kv_heads;
        scratch.prepare(geo, task);
        let AttentionScratch {
            scores,
            probs,
            query,
            key,
            lanes,
            key_rows,
            value_rows,
            ..
        } = scratch;
        // The buffers of the two-pass kernel, borrowed: a head's running maximum and sum, its
        // weighted values (`lanes` holds at least eight heads' worth), and a widened value row.
        let (maxes, sums) = (&mut scores[..group], &mut probs[..group]);
        maxes.fill(f32::NEG_INFINITY);
        sums.fill(0.0);
        let (acc, rest) = lanes.split_at_mut(group * hd);
        let value = &mut rest[..hd];
        acc.fill(0.0);
        for pos in 0..task.len {
            if let (Some(&k), Some(&v)) = (
                key_rows.get(pos + PREFETCH_ROWS),
                value_rows.get(pos + PREFETCH_ROWS),
            ) {
                prefetch_row(k, hd);
                prefetch_row(v, hd);
            }
            // SAFETY: gathered by `prepare` from the task's cache, which outlives this call.
            unsafe {
                W::widen(head_row(key_rows[pos], hd), key);
                W::widen(head_row(value_rows[pos], hd), value);
            }
            for (g, acc) in acc.chunks_exact_mut(hd).enumerate() {
                let mut score = [dot(&query[g * hd..(g + 1) * hd], key) * geo.scale];
                geo.cap_scores(&mut score);
                let [score] = score;
                if score > maxes[g] {
                    // Everything so far was weighted against a smaller maximum.
                    let rescale = if maxes[g] == f32::NEG_INFINITY {
                        0.0
                    } else {
                        v_expf(maxes[g] - score)
                    };
                    sums[g] *= rescale;
                    acc.iter_mut().for_each(|a| *a *= rescale);
                    maxes[g] = score;
                }
                let weight = v_expf(score - maxes[g]);
                sums[g] += weight;
                for (a, &v) in acc.iter_mut().zip(value.iter()) {
                    *a = v.mul_add(weight, *a);
                }
            }
        }
        for ((out, acc), &sum) in out_group
            .chunks_exact_mut(hd)
            .zip(acc.chunks_exact(hd))
            .zip(sums.iter())
        {
            let inv = 1.0 / sum;
            for (o, &a) in out.iter_mut().zip(acc) {
                *o = a * inv;
            }
        }
    }
}

/// The dot product of two rows: eight lanes of fused multiply-adds, the tail added after.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] = ca[l].mul_add(cb[l], lanes[l]);
        }
    }
    let whole = a.len() / 8 * 8;
    let tail: f32 = a[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum();
    hsum8(&lanes) + tail
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::cpu::attention::{attend_row, ProductOrder};
    use crate::kv_cache::{BlockLayout, KvPool, SequenceKv};

    /// The online softmax against attention computed in f64 from the same (f16) cache and
    /// f16-rounded queries, and against the two-pass kernel: heads 64 and 20 wide (a tail
    /// past the eight-lane chunks), one and three query heads per key/value head, lengths
    /// across blocks, scores large enough that the maximum moves.
    #[test]
    fn online_softmax_is_attention() {
        let mut rng = StdRng::seed_from_u64(11);
        for (head_dim, group) in [(64, 3), (20, 1)] {
            let num_kv_heads = 2;
            let geo = AttentionGeometry {
                num_heads: num_kv_heads * group,
                num_kv_heads,
                head_dim,
                scale: 1.0 / (head_dim as f32).sqrt(),
                soft_cap: None,
            };
            let kv_width = num_kv_heads * head_dim;
            let layout = BlockLayout {
                block_size: 7,
                num_layers: 1,
                kv_width,
            };
            let positions = 40;
            let mut kv = SequenceKv::new(KvPool::unbounded(layout));
            kv.reserve(positions).unwrap();
            let mut random = |n: usize, scale: f32| -> Vec<f32> {
                (0..n).map(|_| rng.random_range(-scale..scale)).collect()
            };
            let keys = random(positions * kv_width, 4.0);
            let values = random(positions * kv_width, 1.0);
            kv.write(0, 0, &keys, &values);
            kv.advance(positions);
            let queries = random(group * head_dim, 4.0);
            let round = |x: f32| half::f16::from_f32(x).to_f64();
            for len in [1, 2, 7, 8, 25, 40] {
                let task = AttentionTask {
                    order: ProductOrder::Gemv,
                    kv_head: 1,
                    queries: &queries,
                    kv: kv.view(0),
                    len,
                    whole_rows: false,
                };
                let mut online = vec![0f32; group * head_dim];
                let mut two_pass = vec![0f32; group * head_dim];
                let mut scratch = AttentionScratch::default();
                attend_row_online(&geo, &task, &mut online, &mut scratch);
                attend_row(&geo, &task, &mut two_pass, &mut scratch);
                for g in 0..group {
                    let q = &queries[g * head_dim..(g + 1) * head_dim];
                    let at = |data: &[f32], pos: usize, d: usize| {
                        round(data[pos * kv_width + head_dim + d])
                    };
                    let scores: Vec<f64> = (0..len)
                        .map(|pos| {
                            let dot: f64 =
                                (0..head_dim).map(|d| round(q[d]) * at(&keys, pos, d)).sum();
                            dot * f64::from(geo.scale)
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    for d in 0..head_dim {
                        let want: f64 = (0..len)
                            .map(|pos| weights[pos] * at(&values, pos, d))
                            .sum::<f64>()
                            / total;
                        let got = online[g * head_dim + d];
                        assert!(
                            (f64::from(got) - want).abs() < 1e-5,
                            "hd {head_dim} len {len} head {g} dim {d}: {got} vs {want}"
                        );
                        // The two-pass kernel rounds probabilities to f16, as llama.cpp does.
                        let other = two_pass[g * head_dim + d];
                        assert!((got - other).abs() < 2e-3, "{got} vs two-pass {other}");
                    }
                }
            }
        }
    }
}

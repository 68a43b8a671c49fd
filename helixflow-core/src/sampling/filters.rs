//! The truncation filters (`top_k`, `top_p`, `min_p`) over a list of candidate tokens.
//!
//! Scores are logits after bias, penalties and temperature; probabilities are their softmax
//! over the current candidates, so each filter sees the renormalised result of the previous one.
//! None of them needs the candidates in any order, and none sorts the whole vocabulary.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::kernels::fast_exp;

/// Below this many candidates the nucleus is found by a plain sort.
const NUCLEUS_SORT_BELOW: usize = 512;
/// Nucleus histogram resolution: buckets per nat of log-probability below the best token.
const BUCKETS_PER_NAT: f32 = 16.0;
/// Nucleus histogram size: 64 nats deep; the last bucket collects the (negligible) rest.
const BUCKETS: usize = 1024;

/// A token id with its current score; an entry of the sampler's reused buffer.
///
/// Ordered by rank ([`by_score_desc`]): a candidate is "less" when it is more likely.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    /// The token id.
    pub id: u32,
    /// Its adjusted logit (or, once the draw starts, its unnormalised probability).
    pub score: f32,
}

/// Highest score first, lowest id first on ties: a total order, so every selection and sort is
/// deterministic.
pub(super) fn by_score_desc(a: &Candidate, b: &Candidate) -> Ordering {
    b.score.total_cmp(&a.score).then(a.id.cmp(&b.id))
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        by_score_desc(self, other)
    }
}

/// The highest score (-inf for none).
pub(super) fn max_score(candidates: &[Candidate]) -> f32 {
    candidates
        .iter()
        .fold(f32::NEG_INFINITY, |m, c| m.max(c.score))
}

/// Keeps the `k` highest-scoring candidates (lowest ids among equal scores), in no particular
/// order. `k == 0` keeps everything.
pub(super) fn keep_top_k(candidates: &mut Vec<Candidate>, k: usize) {
    if k == 0 || k >= candidates.len() {
        return;
    }
    candidates.select_nth_unstable_by(k - 1, by_score_desc);
    candidates.truncate(k);
}

/// Fills `out` with the `k` highest of `scores` that are not -inf (lowest ids among equal
/// scores), in no particular order, reusing `out`'s allocation. `k == 0` keeps none.
pub(super) fn collect_top_k(scores: &[f32], k: usize, out: &mut Vec<Candidate>) {
    out.clear();
    // A max-heap by rank keeps the worst of the current top k on top.
    let mut heap = BinaryHeap::from(std::mem::take(out));
    let mut worst = f32::NEG_INFINITY;
    for (id, &score) in scores.iter().enumerate() {
        // Cheap rejection first: most tokens are below the current k-th score.
        if score < worst || score == f32::NEG_INFINITY {
            continue;
        }
        let candidate = Candidate {
            id: id as u32,
            score,
        };
        if heap.len() < k {
            heap.push(candidate);
        } else if let Some(mut top) = heap.peek_mut() {
            if candidate < *top {
                *top = candidate;
            } else {
                continue;
            }
        }
        if heap.len() == k {
            worst = heap.peek().map_or(f32::NEG_INFINITY, |c| c.score);
        }
    }
    *out = heap.into_vec();
}

/// Keeps the candidates whose probability is at least `min_p` times the best one's.
pub(super) fn keep_min_p(candidates: &mut Vec<Candidate>, min_p: f32) {
    // p_i >= min_p · p_max  ⇔  s_i - s_max >= ln(min_p): no normalisation needed.
    let threshold = max_score(candidates) + min_p.ln();
    candidates.retain(|c| c.score >= threshold);
}

/// Keeps the smallest set of most likely candidates whose probability mass reaches `top_p`
/// (always at least one; ties broken towards lower ids), in no particular order.
///
/// Large lists go through a histogram of the mass by log-probability: every bucket above the
/// one where the cumulative mass crosses `top_p` is kept whole, and only that bucket is sorted.
pub(super) fn keep_nucleus(candidates: &mut Vec<Candidate>, top_p: f32) {
    let n = candidates.len();
    if n <= 1 || top_p >= 1.0 {
        return;
    }
    let max = max_score(candidates);
    if n < NUCLEUS_SORT_BELOW {
        candidates.sort_unstable_by(by_score_desc);
        let total: f64 = candidates.iter().map(|c| weight(c, max)).sum();
        let keep = cut_sorted(candidates, max, 0.0, f64::from(top_p) * total);
        candidates.truncate(keep);
        return;
    }
    let mut mass = [0.0f64; BUCKETS];
    for c in candidates.iter() {
        mass[bucket(c.score, max)] += weight(c, max);
    }
    let total: f64 = mass.iter().sum();
    let threshold = f64::from(top_p) * total;
    let mut above = 0.0; // mass of the buckets before the edge bucket
    let mut edge = BUCKETS - 1;
    for (b, &m) in mass.iter().enumerate() {
        if above + m >= threshold {
            edge = b;
            break;
        }
        above += m;
    }
    candidates.retain(|c| bucket(c.score, max) <= edge);
    // Move the edge bucket to the tail; only it needs an order.
    let mut end = candidates.len();
    let mut i = 0;
    while i < end {
        if bucket(candidates[i].score, max) == edge {
            end -= 1;
            candidates.swap(i, end);
        } else {
            i += 1;
        }
    }
    let edge_members = &mut candidates[end..];
    edge_members.sort_unstable_by(by_score_desc);
    let keep = end + cut_sorted(edge_members, max, above, threshold);
    // At least one token, even if rounding left everything below the threshold.
    candidates.truncate(keep.max(1));
}

/// Unnormalised probability of a candidate relative to the best score.
fn weight(c: &Candidate, max: f32) -> f64 {
    f64::from(fast_exp(c.score - max))
}

/// Histogram bucket of a score: 0 for the best, one per 1/16 nat below it.
fn bucket(score: f32, max: f32) -> usize {
    // `as` saturates, and the difference is never negative or NaN here.
    (((max - score) * BUCKETS_PER_NAT) as usize).min(BUCKETS - 1)
}

/// How many of the sorted `candidates` to keep so that `mass_before` plus their mass (weights
/// relative to `max`) reaches `threshold`; all of them if it never does.
fn cut_sorted(candidates: &[Candidate], max: f32, mass_before: f64, threshold: f64) -> usize {
    let mut mass = mass_before;
    for (i, c) in candidates.iter().enumerate() {
        mass += weight(c, max);
        if mass >= threshold {
            return i + 1;
        }
    }
    candidates.len()
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn candidates(scores: &[f32]) -> Vec<Candidate> {
        scores
            .iter()
            .enumerate()
            .map(|(id, &score)| Candidate {
                id: id as u32,
                score,
            })
            .collect()
    }

    /// Ids by descending score, lowest id first on ties (the oracle's order).
    fn sorted_ids(scores: &[f32]) -> Vec<u32> {
        let mut order: Vec<u32> = (0..scores.len() as u32).collect();
        order.sort_by(|&a, &b| {
            scores[b as usize]
                .total_cmp(&scores[a as usize])
                .then(a.cmp(&b))
        });
        order
    }

    fn kept_sorted(kept: &[Candidate]) -> Vec<u32> {
        let mut kept = kept.to_vec();
        kept.sort_by(by_score_desc);
        kept.iter().map(|c| c.id).collect()
    }

    /// Oracle: full sort, f64 softmax, keep until the cumulative mass reaches top_p.
    fn nucleus_oracle(scores: &[f32], top_p: f32) -> Vec<u32> {
        let max = scores
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let total: f64 = scores.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        let mut mass = 0.0;
        let mut kept = Vec::new();
        for id in sorted_ids(scores) {
            kept.push(id);
            mass += (f64::from(scores[id as usize]) - max).exp() / total;
            if mass >= f64::from(top_p) {
                break;
            }
        }
        kept
    }

    /// A named score distribution: name, size, one draw.
    type Distribution = (&'static str, usize, fn(&mut StdRng) -> f32);

    #[test]
    fn nucleus_matches_a_full_sort() {
        let mut rng = StdRng::seed_from_u64(21);
        let distributions: [Distribution; 4] = [
            ("flat, large", 20_000, |r| r.random_range(-0.5f32..0.5)),
            ("spread, large", 50_000, |r| {
                // Roughly bell-shaped: a sum of uniforms, a few nats wide.
                (0..4).map(|_| r.random_range(-3.0f32..3.0)).sum()
            }),
            ("peaked, large", 30_000, |r| {
                if r.random_bool(0.001) {
                    r.random_range(10.0f32..20.0)
                } else {
                    r.random_range(-10.0f32..0.0)
                }
            }),
            ("small", 300, |r| r.random_range(-4.0f32..4.0)),
        ];
        for (name, n, draw) in distributions {
            let scores: Vec<f32> = (0..n).map(|_| draw(&mut rng)).collect();
            for top_p in [1e-6f32, 0.1, 0.5, 0.9, 0.95, 0.999] {
                let mut kept = candidates(&scores);
                keep_nucleus(&mut kept, top_p);
                let kept = kept_sorted(&kept);
                let expected = nucleus_oracle(&scores, top_p);
                // Summation order differs: the boundary may move by one token, no more.
                let diff = kept.len().abs_diff(expected.len());
                assert!(
                    diff <= 1,
                    "{name}, top_p {top_p}: kept {} vs {}",
                    kept.len(),
                    expected.len()
                );
                let common = kept.len().min(expected.len());
                assert_eq!(kept[..common], expected[..common], "{name}, top_p {top_p}");
            }
        }
    }

    #[test]
    fn nucleus_keeps_at_least_one() {
        let scores = [3.0f32, 1.0, 0.0];
        let mut kept = candidates(&scores);
        keep_nucleus(&mut kept, 1e-9);
        assert_eq!(kept_sorted(&kept), vec![0]);
        let mut one = candidates(&[0.5]);
        keep_nucleus(&mut one, 0.1);
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn top_k_keeps_the_k_best_lowest_id_on_ties() {
        let mut rng = StdRng::seed_from_u64(5);
        // Coarse scores: many ties.
        let scores: Vec<f32> = (0..5000).map(|_| rng.random_range(0..50) as f32).collect();
        for k in [1, 7, 40, 4999, 5000, 9000] {
            let mut kept = candidates(&scores);
            keep_top_k(&mut kept, k);
            let expected: Vec<u32> = sorted_ids(&scores).into_iter().take(k).collect();
            assert_eq!(kept_sorted(&kept), expected, "k {k}");
        }
        let mut all = candidates(&scores);
        keep_top_k(&mut all, 0);
        assert_eq!(all.len(), 5000);
    }

    #[test]
    fn collect_top_k_matches_a_full_sort_and_skips_impossible_tokens() {
        let mut rng = StdRng::seed_from_u64(6);
        let mut scores: Vec<f32> = (0..5000).map(|_| rng.random_range(0..50) as f32).collect();
        for id in (0..5000).step_by(3) {
            scores[id] = f32::NEG_INFINITY;
        }
        let finite = scores.iter().filter(|s| s.is_finite()).count();
        let mut out = Vec::new();
        for k in [1, 2, 40, 1000, finite, finite + 10] {
            collect_top_k(&scores, k, &mut out);
            let expected: Vec<u32> = sorted_ids(&scores)
                .into_iter()
                .filter(|&id| scores[id as usize].is_finite())
                .take(k)
                .collect();
            assert_eq!(kept_sorted(&out), expected, "k {k}");
        }
        collect_top_k(&scores, 0, &mut out);
        assert!(out.is_empty());
        // Ascending scores: every token displaces the worst kept one.
        let rising: Vec<f32> = (0..300).map(|i| i as f32).collect();
        collect_top_k(&rising, 5, &mut out);
        assert_eq!(kept_sorted(&out), vec![299, 298, 297, 296, 295]);
    }

    #[test]
    fn min_p_is_relative_to_the_best_probability() {
        let probs = [0.5f32, 0.3, 0.15, 0.05];
        let scores: Vec<f32> = probs.iter().map(|p| p.ln() + 7.0).collect();
        for (min_p, expected) in [
            (0.0, vec![0, 1, 2, 3]),
            (0.2, vec![0, 1, 2]),
            (0.4, vec![0, 1]),
            (0.9, vec![0]),
            (1.0, vec![0]),
        ] {
            let mut kept = candidates(&scores);
            keep_min_p(&mut kept, min_p);
            assert_eq!(kept_sorted(&kept), expected, "min_p {min_p}");
        }
    }
}

//! [`super::attend_row`] with AVX2, FMA and F16C: the same arithmetic as the portable code,
//! lane for lane (see the test that holds them to each other), with the cache rows widened
//! straight into registers and each value slot summed in registers.
//!
//! The portable code keeps a value slot's accumulators in memory and updates them position by
//! position; here each slot (every `slots`-th position) is summed in registers and stored
//! once, which adds the same products in the same order.

use std::arch::x86_64::*;

use half::f16;

use super::{
    prefetch_row, reduce_slots, AttentionGeometry, AttentionScratch, AttentionTask, ProductOrder,
    PREFETCH_ROWS,
};
use crate::cpu::math::softmax_numerators;

/// Whether the kernel handles heads `head_dim` wide (whole 32-value chunks).
pub(super) fn handles(head_dim: usize) -> bool {
    head_dim.is_multiple_of(32)
}

/// Runs `task` into `out_group`; `geo.head_dim` must be [`handles`]d and `task.order` one of
/// the AVX2 build's ([`super::attend_row`] runs the AVX-512 build's portably).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn attend_row(
    geo: &AttentionGeometry,
    task: &AttentionTask<'_>,
    out_group: &mut [f32],
    scratch: &mut AttentionScratch,
) {
    let AttentionTask { order, len, .. } = *task;
    let hd = geo.head_dim;
    debug_assert!(handles(hd) && order.build() == super::GgmlBuild::Avx2);
    let slots = order.slots();
    scratch.prepare(geo, task);
    let AttentionScratch {
        scores,
        probs,
        query,
        lanes,
        key_rows,
        value_rows,
        ..
    } = scratch;

    // Scores, prefetching the key and value rows a few positions ahead (the value pass
    // visits them out of order). The query heads of the key/value head share each widened
    // key row.
    // A task that runs the token's other heads next asks for whole rows on its first head
    // (the row's parts after the first head's), as many lines ahead as for one head's part:
    // with 16 sequences, a third less time in attention than each head asking for its own
    // part eight rows ahead.
    let prefetch = if task.whole_rows {
        (geo.num_kv_heads - task.kv_head) * hd
    } else {
        hd
    };
    let rows = CacheRows {
        keys: key_rows,
        values: value_rows,
        hd,
        prefetch,
        ahead: (PREFETCH_ROWS * hd).div_ceil(prefetch),
    };
    let scale = geo.scale;
    match query.len() / hd {
        1 => scores_of::<1>(order, query, &rows, scale, scores),
        2 => scores_of::<2>(order, query, &rows, scale, scores),
        3 => scores_of::<3>(order, query, &rows, scale, scores),
        4 => scores_of::<4>(order, query, &rows, scale, scores),
        _ => {
            for pos in 0..len {
                rows.prefetch(pos + rows.ahead);
                let key = key_rows[pos];
                for (g, q) in query.chunks_exact(hd).enumerate() {
                    // SAFETY: `key` points at `hd` cached values and `q` has `hd` values.
                    let dot = unsafe {
                        match order {
                            ProductOrder::Gemm | ProductOrder::WideGemm => dot_gemm(q, key),
                            ProductOrder::Gemv | ProductOrder::WideGemv => dot_gemv(q, key),
                        }
                    };
                    scores[g * len + pos] = dot * scale;
                }
            }
        }
    }

    for (g_scores, g_probs) in scores
        .chunks_exact_mut(len)
        .zip(probs.chunks_exact_mut(len))
    {
        geo.cap_scores(g_scores);
        let max = g_scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let inv = (1.0 / softmax_numerators(g_scores, max)) as f32;
        round_probabilities(g_scores, inv, g_probs);
    }

    // Weighted sums of values: slot `s` sums positions `s, s + slots, ...` in order.
    match lanes.len() / (slots * hd) {
        1 => values_of::<1>(slots, probs, &rows, lanes),
        2 => values_of::<2>(slots, probs, &rows, lanes),
        3 => values_of::<3>(slots, probs, &rows, lanes),
        4 => values_of::<4>(slots, probs, &rows, lanes),
        _ => {
            for (g, g_lanes) in lanes.chunks_exact_mut(slots * hd).enumerate() {
                let p = &probs[g * len..(g + 1) * len];
                for (slot, slot_lanes) in g_lanes.chunks_exact_mut(hd).enumerate() {
                    for (chunk, out) in slot_lanes.chunks_exact_mut(32).enumerate() {
                        let mut acc = [_mm256_setzero_ps(); 4];
                        let mut pos = slot;
                        while pos < len {
                            let weight = _mm256_set1_ps(p[pos]);
                            // SAFETY: the row has `hd` values, of which this chunk reads 32.
                            let row = unsafe { value_rows[pos].add(chunk * 32) };
                            for (j, a) in acc.iter_mut().enumerate() {
                                // SAFETY: eight values of the chunk.
                                let v = unsafe { widen8(row.add(8 * j)) };
                                *a = _mm256_fmadd_ps(v, weight, *a);
                            }
                            pos += slots;
                        }
                        for (j, a) in acc.iter().enumerate() {
                            // SAFETY: `out` is 32 values.
                            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * j), *a) };
                        }
                    }
                }
            }
        }
    }
    reduce_slots(order, hd, lanes, out_group);
}

/// A task's gathered key and value rows, `hd` values each.
struct CacheRows<'a> {
    keys: &'a [*const f16],
    values: &'a [*const f16],
    hd: usize,
    /// Values of each row to prefetch, from the task's head on.
    prefetch: usize,
    /// How many positions ahead to prefetch.
    ahead: usize,
}

impl CacheRows<'_> {
    /// Prefetches position `pos`'s key and value rows, if it has them.
    #[inline(always)]
    fn prefetch(&self, pos: usize) {
        if let (Some(&k), Some(&v)) = (self.keys.get(pos), self.values.get(pos)) {
            prefetch_row(k, self.prefetch);
            prefetch_row(v, self.prefetch);
        }
    }
}

/// The scaled scores of `G` query heads (`query`, `G · hd` values) against every key row, into
/// `scores` (`G` rows of one score per position): each key row widened once for all `G`
/// heads, each head's dot product in `order` exactly as [`dot_gemm`] or [`dot_gemv`] sums it.
#[inline(always)]
fn scores_of<const G: usize>(
    order: ProductOrder,
    query: &[f32],
    rows: &CacheRows<'_>,
    scale: f32,
    scores: &mut [f32],
) {
    let (hd, len) = (rows.hd, rows.keys.len());
    assert!(query.len() == G * hd && scores.len() >= G * len && hd.is_multiple_of(32));
    let q = query.as_ptr();
    // SAFETY (every block below): the loads read `query` at offsets below `G · hd` and key
    // rows at offsets below `hd`; the features are enabled where this is inlined.
    for (pos, &key) in rows.keys.iter().enumerate() {
        rows.prefetch(pos + rows.ahead);
        let dots: [f32; G] = match order {
            ProductOrder::Gemv | ProductOrder::WideGemv => unsafe {
                let mut acc = [[_mm256_setzero_ps(); 4]; G];
                for c in (0..hd).step_by(32) {
                    let mut k = [_mm256_setzero_ps(); 4];
                    for (j, k) in k.iter_mut().enumerate() {
                        *k = widen8(key.add(c + 8 * j));
                    }
                    for (g, acc) in acc.iter_mut().enumerate() {
                        for (j, a) in acc.iter_mut().enumerate() {
                            let qv = _mm256_loadu_ps(q.add(g * hd + c + 8 * j));
                            *a = _mm256_fmadd_ps(qv, k[j], *a);
                        }
                    }
                }
                let mut dots = [0.0; G];
                for (dot, acc) in dots.iter_mut().zip(acc) {
                    *dot = reduce_gemv(acc);
                }
                dots
            },
            ProductOrder::Gemm | ProductOrder::WideGemm => unsafe {
                let mut acc = [_mm256_setzero_ps(); G];
                for c in (0..hd).step_by(8) {
                    let k = widen8(key.add(c));
                    for (g, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(g * hd + c)), k, *a);
                    }
                }
                let mut dots = [0.0; G];
                for (dot, acc) in dots.iter_mut().zip(acc) {
                    *dot = hsum8(acc);
                }
                dots
            },
        };
        for (g, dot) in dots.into_iter().enumerate() {
            scores[g * len + pos] = dot * scale;
        }
    }
}

/// The value pass for `G` query heads: `lanes` holds each head's `slots` slots of `hd` sums,
/// slot `s` summing positions `s, s + slots, ...` in order, each value row chunk widened once
/// for all `G` heads.
#[inline(always)]
fn values_of<const G: usize>(slots: usize, probs: &[f32], rows: &CacheRows<'_>, lanes: &mut [f32]) {
    let (hd, len) = (rows.hd, rows.values.len());
    assert!(lanes.len() == G * slots * hd && probs.len() >= G * len && hd.is_multiple_of(16));
    let out = lanes.as_mut_ptr();
    for slot in 0..slots.min(len) {
        for chunk in (0..hd).step_by(16) {
            // SAFETY (every block below): the loads read 16 values of rows of `hd`, and
            // `probs` below `G · len`; the stores write 16 sums inside `lanes`; the features
            // are enabled where this is inlined.
            unsafe {
                let mut acc = [[_mm256_setzero_ps(); 2]; G];
                let mut pos = slot;
                while pos < len {
                    let row = rows.values[pos].add(chunk);
                    let v = [widen8(row), widen8(row.add(8))];
                    for (g, acc) in acc.iter_mut().enumerate() {
                        let weight = _mm256_set1_ps(*probs.get_unchecked(g * len + pos));
                        acc[0] = _mm256_fmadd_ps(v[0], weight, acc[0]);
                        acc[1] = _mm256_fmadd_ps(v[1], weight, acc[1]);
                    }
                    pos += slots;
                }
                for (g, acc) in acc.iter().enumerate() {
                    let at = out.add((g * slots + slot) * hd + chunk);
                    _mm256_storeu_ps(at, acc[0]);
                    _mm256_storeu_ps(at.add(8), acc[1]);
                }
            }
        }
    }
    // Slots past the last position sum nothing.
    for g in 0..G {
        for slot in len..slots {
            lanes[(g * slots + slot) * hd..][..hd].fill(0.0);
        }
    }
}

/// `ggml_vec_dot_f16`'s reduction of its four accumulators: (slot `l` + slot `16 + l`) +
/// (slot `8 + l` + slot `24 + l`), then lanes `l` and `l + 4`, then (0 + 1) + (2 + 3).
#[inline(always)]
fn reduce_gemv(acc: [__m256; 4]) -> f32 {
    // SAFETY: the features are enabled where this is inlined.
    unsafe {
        let r = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
        let t = _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps::<1>(r));
        let pairs = _mm_hadd_ps(t, t);
        _mm_cvtss_f32(_mm_hadd_ps(pairs, pairs))
    }
}

/// tinyBLAS's `hsum8` of one accumulator: lanes `i` and `i + 4`, then (0 + 2) + (1 + 3).
#[inline(always)]
fn hsum8(acc: __m256) -> f32 {
    // SAFETY: the features are enabled where this is inlined.
    unsafe {
        let quad = _mm_add_ps(_mm256_extractf128_ps::<1>(acc), _mm256_castps256_ps128(acc));
        let pairs = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)))
    }
}

/// Eight cached f16 values from `src`, widened.
#[inline(always)]
unsafe fn widen8(src: *const f16) -> __m256 {
    // SAFETY: the caller guarantees eight readable values; F16C is enabled where inlined.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(src.cast())) }
}

/// `f16(s · inv)` as f32 for each score `s`, eight at a time (F16C rounds to nearest even,
/// as `half` does).
#[inline(always)]
fn round_probabilities(scores: &[f32], inv: f32, probs: &mut [f32]) {
    let whole = scores.len() / 8 * 8;
    // SAFETY: every load and store covers eight values inside the slices; the features are
    // enabled where this is inlined.
    unsafe {
        let inv8 = _mm256_set1_ps(inv);
        for i in (0..whole).step_by(8) {
            let scaled = _mm256_mul_ps(_mm256_loadu_ps(scores.as_ptr().add(i)), inv8);
            let halves = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(scaled);
            _mm256_storeu_ps(probs.as_mut_ptr().add(i), _mm256_cvtph_ps(halves));
        }
    }
    for (p, &s) in probs[whole..].iter_mut().zip(&scores[whole..]) {
        *p = f16::from_f32(s * inv).to_f32();
    }
}

/// tinyBLAS's dot product (lane `i % 8`, then `hsum8`) of `q` with the cached row `k`.
#[inline(always)]
unsafe fn dot_gemm(q: &[f32], k: *const f16) -> f32 {
    // SAFETY: `k` has `q.len()` values, a multiple of eight.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (i, chunk) in q.chunks_exact(8).enumerate() {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(chunk.as_ptr()), widen8(k.add(8 * i)), acc);
        }
        hsum8(acc)
    }
}

/// `ggml_vec_dot_f16`'s dot product (four accumulators of eight lanes over 32-value chunks,
/// reduced by `GGML_F32x8_REDUCE`) of `q` with the cached row `k`.
#[inline(always)]
unsafe fn dot_gemv(q: &[f32], k: *const f16) -> f32 {
    // SAFETY: `k` has `q.len()` values, a multiple of 32.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        for (c, chunk) in q.chunks_exact(32).enumerate() {
            for (j, a) in acc.iter_mut().enumerate() {
                let qv = _mm256_loadu_ps(chunk.as_ptr().add(8 * j));
                *a = _mm256_fmadd_ps(qv, widen8(k.add(32 * c + 8 * j)), *a);
            }
        }
        reduce_gemv(acc)
    }
}

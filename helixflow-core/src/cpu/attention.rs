//! Causal attention of one query row over a sequence's f16 key/value cache.
//!
//! The arithmetic is llama.cpp's without flash attention: queries rounded to f16, scores as
//! f16×f16 dot products, softmax with ggml's vector `expf`, probabilities rounded to f16, and
//! the weighted sum of values as f16×f16 dot products over positions. llama.cpp sums those dot
//! products in one of two orders (see [`ProductOrder`]), depending on how many tokens the step
//! has, and with eight or sixteen lanes, depending on the build ([`GgmlBuild`]); all four are
//! reproduced. [`attend_row_online`] is the alternative with an online softmax
//! (one pass over the cache, not llama.cpp's bits).

use std::ops::Range;

#[cfg(target_arch = "x86_64")]
mod avx2;
mod online;

pub use online::attend_row_online;

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::features::has_avx2_fma;
use super::math::{hsum16, hsum8, softmax_numerators_in};
use crate::kv_cache::KvView;
pub use helixflow_kernels::reference::GgmlBuild;

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
    /// Scores are soft-capped at this, `cap · tanh(s / cap)` (Gemma 2), after the scale:
    /// llama.cpp's order where the queries carry the scale and `scale` is 1, as Gemma 2's do.
    pub soft_cap: Option<f32>,
}

impl AttentionGeometry {
    /// Soft-caps one row of scaled scores where the geometry says so, as ggml does: scaled by
    /// `1 / cap`, `tanh`, scaled by `cap`.
    #[inline(always)]
    fn cap_scores(&self, scores: &mut [f32]) {
        if let Some(cap) = self.soft_cap {
            super::math::soft_cap(scores, cap);
        }
    }
}

/// The summation order of the f16 dot products, which llama.cpp picks by the number of query
/// tokens in its batch (the prompt's tokens go together, generated tokens one at a time) and
/// whose lanes its build sets ([`GgmlBuild`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductOrder {
    /// Several tokens (prefill): llamafile's tinyBLAS, one eight-lane accumulator.
    Gemm,
    /// A single token (decode): ggml's `ggml_vec_dot_f16`, four eight-lane accumulators.
    Gemv,
    /// [`Self::Gemm`] in an AVX-512 build: one sixteen-lane accumulator.
    WideGemm,
    /// [`Self::Gemv`] in an AVX-512 build: four sixteen-lane accumulators.
    WideGemv,
}

impl ProductOrder {
    /// The accumulator slots of the sums over positions: position `pos` goes into slot
    /// `pos % slots` (one accumulator's lanes for a Gemm, a Gemv's four).
    pub fn slots(self) -> usize {
        match self {
            Self::Gemm => 8,
            Self::Gemv => 32,
            Self::WideGemm => 16,
            Self::WideGemv => 64,
        }
    }

    /// The build whose order this is.
    pub fn build(self) -> GgmlBuild {
        match self {
            Self::Gemm | Self::Gemv => GgmlBuild::Avx2,
            Self::WideGemm | Self::WideGemv => GgmlBuild::Avx512,
        }
    }

    /// The order llama.cpp built as `build` uses for the token at `pos` of a sequence whose
    /// prompt has `prompt_len` tokens, with heads `head_dim` wide: the prompt is one batch
    /// (tinyBLAS, which needs at least two tokens and a multiple of its lanes), every later
    /// token a batch of one.
    pub fn for_position(pos: usize, prompt_len: usize, head_dim: usize, build: GgmlBuild) -> Self {
        let batched = pos < prompt_len && prompt_len >= 2 && head_dim.is_multiple_of(build.lanes());
        match (batched, build) {
            (true, GgmlBuild::Avx2) => Self::Gemm,
            (false, GgmlBuild::Avx2) => Self::Gemv,
            (true, GgmlBuild::Avx512) => Self::WideGemm,
            (false, GgmlBuild::Avx512) => Self::WideGemv,
        }
    }

    /// This order's dot product of a query and a widened key.
    #[inline(always)]
    fn dot(self, q: &[f32], key: &[f32]) -> f32 {
        match self {
            Self::Gemm => dot_gemm(q, key),
            Self::Gemv => dot_gemv(q, key),
            Self::WideGemm => dot_gemm_wide(q, key),
            Self::WideGemv => dot_gemv_wide(q, key),
        }
    }
}

/// Reusable buffers for [`attend_row`], so that a decode step does not allocate.
#[derive(Debug, Default)]
pub struct AttentionScratch {
    scores: Vec<f32>,
    probs: Vec<f32>,
    query: Vec<f32>,
    /// The queries rounded to f16, on their way to `query`.
    query_half: Vec<f16>,
    key: Vec<f32>,
    lanes: Vec<f32>,
    /// The task's key and value rows (its head's columns), position by position.
    key_rows: Vec<*const f16>,
    value_rows: Vec<*const f16>,
}

impl AttentionScratch {
    /// Sizes the buffers for `group` query heads `hd` wide over `len` positions.
    fn size_for(&mut self, group: usize, len: usize, hd: usize, slots: usize) {
        self.scores.resize(group * len, 0.0);
        self.probs.resize(group * len, 0.0);
        self.query.resize(group * hd, 0.0);
        self.key.resize(hd, 0.0);
        self.lanes.resize(group * slots * hd, 0.0);
    }

    /// Readies the buffers for `task`: sized, its key and value rows gathered, and its
    /// queries rounded to f16 (llama.cpp multiplies the cache with f16 queries).
    fn prepare(&mut self, geo: &AttentionGeometry, task: &AttentionTask<'_>) {
        let hd = geo.head_dim;
        let group = geo.num_heads / geo.num_kv_heads;
        self.size_for(group, task.len, hd, task.order.slots());
        let head = task.kv_head * hd..(task.kv_head + 1) * hd;
        gather_rows(
            task.kv,
            task.len,
            head,
            &mut self.key_rows,
            &mut self.value_rows,
        );
        // Through f16 a slice at a time: `half`'s slice conversions use F16C where the CPU
        // has it, its one-value ones check for it on every call.
        self.query_half.resize(task.queries.len(), f16::ZERO);
        self.query_half.convert_from_f32_slice(task.queries);
        self.query_half.convert_to_f32_slice(&mut self.query);
    }
}

/// One token's attention for the query heads of one key/value head.
#[derive(Clone, Copy)]
pub struct AttentionTask<'a> {
    /// The summation order of the token's products.
    pub order: ProductOrder,
    /// The key/value head.
    pub kv_head: usize,
    /// The token's queries of the heads that `kv_head` serves (`num_heads / num_kv_heads`
    /// heads, back to back).
    pub queries: &'a [f32],
    /// The layer's cache, rows `[kv_head][head_dim]` per position.
    pub kv: KvView<'a>,
    /// Positions visible to the token (its own included).
    pub len: usize,
    /// Whether the same thread runs the token's other key/value heads next: the first head's
    /// task then asks for whole cache rows (the heads' parts of a row are adjacent) rather
    /// than its own part. Only a hint for the memory system; the results are the same.
    pub whole_rows: bool,
}

/// Runs `task` into `out_group` (the same heads as `task.queries`).
pub fn attend_row(
    geo: &AttentionGeometry,
    task: &AttentionTask<'_>,
    out_group: &mut [f32],
    scratch: &mut AttentionScratch,
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() && avx2::handles(geo.head_dim) && task.order.build() == GgmlBuild::Avx2 {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { avx2::attend_row(geo, task, out_group, scratch) };
        return;
    }
    run_widened::<TwoPass>(geo, task, out_group, scratch);
}

/// An attention kernel written once over how it widens the cached rows, for
/// [`run_widened`].
trait WidenedKernel {
    /// Runs `task` into `out_group`, widening rows with `W`.
    fn run<W: Widen>(
        geo: &AttentionGeometry,
        task: &AttentionTask<'_>,
        out_group: &mut [f32],
        scratch: &mut AttentionScratch,
    );
}

/// Runs kernel `K` compiled for AVX2, FMA and F16C (widening with F16C) where the CPU has
/// them, else portably.
fn run_widened<K: WidenedKernel>(
    geo: &AttentionGeometry,
    task: &AttentionTask<'_>,
    out_group: &mut [f32],
    scratch: &mut AttentionScratch,
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { run_fma::<K>(geo, task, out_group, scratch) };
        return;
    }
    K::run::<SoftWiden>(geo, task, out_group, scratch);
}

/// [`run_widened`]'s kernel compiled for AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_fma<K: WidenedKernel>(
    geo: &AttentionGeometry,
    task: &AttentionTask<'_>,
    out_group: &mut [f32],
    scratch: &mut AttentionScratch,
) {
    K::run::<F16cWiden>(geo, task, out_group, scratch);
}

/// llama.cpp's two passes, portable (and for heads the AVX2 kernel does not handle).
struct TwoPass;

impl WidenedKernel for TwoPass {
    #[inline(always)]
    fn run<W: Widen>(
        geo: &AttentionGeometry,
        task: &AttentionTask<'_>,
        out_group: &mut [f32],
        scratch: &mut AttentionScratch,
    ) {
        let AttentionTask { order, len, .. } = *task;
        let hd = geo.head_dim;
        let slots = order.slots();
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
        // The query heads of one key/value head share each widened cache row.
        for pos in 0..len {
            if let Some(&ahead) = key_rows.get(pos + PREFETCH_ROWS) {
                prefetch_row(ahead, hd);
            }
            // SAFETY: gathered above from the task's cache, which outlives this call.
            W::widen(unsafe { head_row(key_rows[pos], hd) }, key);
            for (g, q) in query.chunks_exact(hd).enumerate() {
                scores[g * len + pos] = order.dot(q, key) * geo.scale;
            }
        }
        for (g_scores, g_probs) in scores
            .chunks_exact_mut(len)
            .zip(probs.chunks_exact_mut(len))
        {
            geo.cap_scores(g_scores);
            let max = g_scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let inv = (1.0 / softmax_numerators_in(order.build(), g_scores, max)) as f32;
            for (p, &s) in g_probs.iter_mut().zip(g_scores.iter()) {
                *p = f16::from_f32(s * inv).to_f32();
            }
        }
        // Weighted sums of values: `lanes[g][slot][d]`, so each position updates contiguous
        // rows of `hd` accumulators.
        lanes.fill(0.0);
        for pos in 0..len {
            if let Some(&ahead) = value_rows.get(pos + PREFETCH_ROWS) {
                prefetch_row(ahead, hd);
            }
            // SAFETY: as for the keys.
            W::widen(unsafe { head_row(value_rows[pos], hd) }, key);
            let slot = pos % slots;
            for (g, acc) in lanes.chunks_exact_mut(slots * hd).enumerate() {
                let p = probs[g * len + pos];
                for (a, &v) in acc[slot * hd..(slot + 1) * hd].iter_mut().zip(key.iter()) {
                    *a = v.mul_add(p, *a);
                }
            }
        }
        reduce_slots(order, hd, lanes, out_group);
    }
}

/// Adds each head's value slots (`lanes[g][slot][d]`) into its output row, as `hsum8` (Gemm),
/// `reduce_gemv` (Gemv) or their sixteen-lane forms reduce one column's slots, for all `hd`
/// columns at once (element-wise, so it vectorises) instead of gathering each column's
/// slots.
#[inline(always)]
fn reduce_slots(order: ProductOrder, hd: usize, lanes: &[f32], out_group: &mut [f32]) {
    let slots = order.slots();
    for (g, acc) in lanes.chunks_exact(slots * hd).enumerate() {
        let out = &mut out_group[g * hd..(g + 1) * hd];
        // Each slot as a slice of exactly `hd`, so the loops below need no bounds checks.
        let slot: [&[f32]; 64] =
            std::array::from_fn(|i| &acc[(i % slots) * hd..(i % slots + 1) * hd]);
        match order {
            ProductOrder::Gemm => {
                for (d, o) in out.iter_mut().enumerate() {
                    let quad = |i: usize| slot[4 + i][d] + slot[i][d];
                    *o = (quad(0) + quad(2)) + (quad(1) + quad(3));
                }
            }
            ProductOrder::Gemv => {
                for (d, o) in out.iter_mut().enumerate() {
                    let r = |l: usize| {
                        (slot[l][d] + slot[16 + l][d]) + (slot[8 + l][d] + slot[24 + l][d])
                    };
                    let t = [r(0) + r(4), r(1) + r(5), r(2) + r(6), r(3) + r(7)];
                    *o = (t[0] + t[1]) + (t[2] + t[3]);
                }
            }
            ProductOrder::WideGemm => {
                for (d, o) in out.iter_mut().enumerate() {
                    *o = hsum16(&std::array::from_fn(|l| slot[l][d]));
                }
            }
            ProductOrder::WideGemv => {
                for (d, o) in out.iter_mut().enumerate() {
                    let lanes = std::array::from_fn(|l| {
                        (slot[l][d] + slot[32 + l][d]) + (slot[16 + l][d] + slot[48 + l][d])
                    });
                    *o = hsum16(&lanes);
                }
            }
        }
    }
}

/// How many positions ahead [`attend_row`] prefetches cache rows: the cache was written a
/// whole step ago and has left the CPU caches since, and blocks are separate allocations,
/// which defeats the hardware's stride prefetching at every block boundary.
const PREFETCH_ROWS: usize = 8;

/// Gathers the `cols` of the key and value rows of positions `0..len` into `keys` and
/// `values`, once per task, so that the passes over positions index them.
fn gather_rows(
    kv: KvView<'_>,
    len: usize,
    cols: Range<usize>,
    keys: &mut Vec<*const f16>,
    values: &mut Vec<*const f16>,
) {
    keys.clear();
    values.clear();
    kv.for_each_row_pair(len, |k, v| {
        keys.push(k[cols.clone()].as_ptr());
        values.push(v[cols.clone()].as_ptr());
    });
}

/// The `len` values of a row that [`gather_rows`] collected.
///
/// # Safety
/// `row` must come from [`gather_rows`] with `len` columns, over a cache still borrowed.
#[inline(always)]
unsafe fn head_row<'a>(row: *const f16, len: usize) -> &'a [f16] {
    // SAFETY: the caller's guarantee.
    unsafe { std::slice::from_raw_parts(row, len) }
}

/// Asks for the cache lines of the `len` f16 values at `row` (a hint; it never faults).
#[inline(always)]
fn prefetch_row(row: *const f16, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for offset in (0..2 * len).step_by(64) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is a hint and never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(row.cast::<i8>().wrapping_add(offset)) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (row, len);
}

/// f16 → f32 conversion of a cached row (exact either way; only the speed differs).
trait Widen {
    fn widen(src: &[f16], dst: &mut [f32]);
}

/// `half`'s conversion, for the portable path.
struct SoftWiden;

impl Widen for SoftWiden {
    #[inline(always)]
    fn widen(src: &[f16], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
}

/// The F16C instruction, eight values at a time, inlined into the AVX2 kernel.
#[cfg(target_arch = "x86_64")]
struct F16cWiden;

#[cfg(target_arch = "x86_64")]
impl Widen for F16cWiden {
    #[inline(always)]
    fn widen(src: &[f16], dst: &mut [f32]) {
        use std::arch::x86_64::{_mm256_cvtph_ps, _mm256_storeu_ps, _mm_loadu_si128};
        let whole = src.len() / 8 * 8;
        for (s, d) in src[..whole]
            .chunks_exact(8)
            .zip(dst[..whole].chunks_exact_mut(8))
        {
            // SAFETY: only used by `attend_row_fma`, which runs where F16C is present; the
            // loads and stores cover exactly eight elements of each slice.
            unsafe {
                let halves = _mm_loadu_si128(s.as_ptr().cast());
                _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(halves));
            }
        }
        src[whole..].convert_to_f32_slice(&mut dst[whole..src.len()]);
    }
}

/// The dot product of one order: element `i` of each `SLOTS`-long chunk into slot `i`,
/// the slots reduced by `reduce`, a tail shorter than a chunk added afterwards in f64 (the
/// batched orders only see whole chunks).
#[inline(always)]
fn dot_in_slots<const SLOTS: usize>(
    a: &[f32],
    b: &[f32],
    reduce: impl Fn(&[f32; SLOTS]) -> f32,
) -> f32 {
    let mut slots = [0f32; SLOTS];
    let whole = a.len() / SLOTS * SLOTS;
    for (ca, cb) in a[..whole]
        .chunks_exact(SLOTS)
        .zip(b[..whole].chunks_exact(SLOTS))
    {
        for i in 0..SLOTS {
            slots[i] = ca[i].mul_add(cb[i], slots[i]);
        }
    }
    let mut total = f64::from(reduce(&slots));
    for (&x, &y) in a[whole..].iter().zip(&b[whole..]) {
        total += f64::from(x * y);
    }
    total as f32
}

/// tinyBLAS's dot product: element `i` into lane `i % 8`, reduced with [`hsum8`]. Only used
/// for lengths that are multiples of eight.
#[inline(always)]
fn dot_gemm(a: &[f32], b: &[f32]) -> f32 {
    dot_in_slots::<8>(a, b, hsum8)
}

/// `ggml_vec_dot_f16`'s dot product: element `i` of each 32-element chunk into slot `i`
/// (four accumulators of eight lanes), reduced by [`reduce_gemv`].
#[inline(always)]
fn dot_gemv(a: &[f32], b: &[f32]) -> f32 {
    dot_in_slots::<32>(a, b, reduce_gemv)
}

/// tinyBLAS's dot product in an AVX-512 build: element `i` into lane `i % 16`, reduced with
/// [`hsum16`]. Only used for lengths that are multiples of sixteen.
#[inline(always)]
fn dot_gemm_wide(a: &[f32], b: &[f32]) -> f32 {
    dot_in_slots::<16>(a, b, hsum16)
}

/// `ggml_vec_dot_f16` in an AVX-512 build: element `i` of each 64-element chunk into slot `i`
/// (four accumulators of sixteen lanes), the accumulators added pairwise and the lanes by
/// [`hsum16`].
#[inline(always)]
fn dot_gemv_wide(a: &[f32], b: &[f32]) -> f32 {
    dot_in_slots::<64>(a, b, |slots| {
        hsum16(&std::array::from_fn(|l| {
            (slots[l] + slots[32 + l]) + (slots[16 + l] + slots[48 + l])
        }))
    })
}

/// GGML_F32x8_REDUCE: the four accumulators pairwise, then the lanes by halves and pairs.
#[inline(always)]
fn reduce_gemv(slots: &[f32; 32]) -> f32 {
    let mut r = [0f32; 8];
    for (l, v) in r.iter_mut().enumerate() {
        *v = (slots[l] + slots[16 + l]) + (slots[8 + l] + slots[24 + l]);
    }
    let t = [r[0] + r[4], r[1] + r[5], r[2] + r[6], r[3] + r[7]];
    (t[0] + t[1]) + (t[2] + t[3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::{BlockLayout, KvPool, SequenceKv};

    #[test]
    fn attention_is_softmax_weighted_values() {
        // Two heads sharing one kv head, three positions, head_dim 2.
        let geo = AttentionGeometry {
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 2,
            scale: 1.0,
            soft_cap: None,
        };
        // Blocks of two positions, so the three positions span two blocks.
        let layout = BlockLayout {
            block_size: 2,
            num_layers: 1,
            kv_width: 2,
        };
        let mut kv = SequenceKv::new(KvPool::unbounded(layout));
        kv.reserve(3).unwrap();
        kv.write(
            0,
            0,
            &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        );
        kv.advance(3);
        let q = [1.0f32, 0.0, 0.0, 0.0];
        let mut out = [0f32; 4];
        let mut scratch = AttentionScratch::default();
        let mut attend = |len: usize, out: &mut [f32]| {
            let task = AttentionTask {
                order: ProductOrder::Gemv,
                kv_head: 0,
                queries: &q,
                kv: kv.view(0),
                len,
                whole_rows: false,
            };
            attend_row(&geo, &task, out, &mut scratch);
        };
        attend(3, &mut out);
        let s = [1.0f32, 0.0, 1.0].map(f32::exp);
        let z: f32 = s.iter().sum();
        let expect0 = (s[0] * 1.0 + s[1] * 3.0 + s[2] * 5.0) / z;
        assert!((out[0] - expect0).abs() < 2e-3, "{} vs {expect0}", out[0]);
        // The second head has a zero query: uniform weights.
        assert!((out[2] - 3.0).abs() < 2e-3);
        assert!((out[3] - 4.0).abs() < 2e-3);
        // Causality: only the first position visible.
        attend(1, &mut out);
        assert_eq!(out[..2], [1.0, 2.0]);
    }

    /// The AVX2 kernel against the portable code, bit for bit: both orders, one and three
    /// query heads per key/value head, heads 32 and 64 wide, lengths across block and slot
    /// boundaries.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_attention_matches_the_portable_code_bit_for_bit() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        if !has_avx2_fma() {
            eprintln!("skipped: no AVX2/FMA/F16C on this CPU");
            return;
        }
        let mut rng = StdRng::seed_from_u64(5);
        for (head_dim, group, block_size) in [(64, 3, 16), (32, 1, 5), (64, 1, 7)] {
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
                block_size,
                num_layers: 2,
                kv_width,
            };
            let positions = 75;
            let mut kv = SequenceKv::new(KvPool::unbounded(layout));
            kv.reserve(positions).unwrap();
            let mut random = |n: usize, scale: f32| -> Vec<f32> {
                (0..n).map(|_| rng.random_range(-scale..scale)).collect()
            };
            for layer in 0..2 {
                let keys = random(positions * kv_width, 2.0);
                let values = random(positions * kv_width, 1.0);
                kv.write(layer, 0, &keys, &values);
            }
            kv.advance(positions);
            let queries = random(group * head_dim, 2.0);
            for order in [ProductOrder::Gemm, ProductOrder::Gemv] {
                for len in [1, 2, 8, 9, 31, 32, 33, 64, 75] {
                    let task = AttentionTask {
                        order,
                        kv_head: 1,
                        queries: &queries,
                        kv: kv.view(1),
                        len,
                        // Either prefetch; the same results.
                        whole_rows: len % 2 == 0,
                    };
                    let mut want = vec![0f32; group * head_dim];
                    let mut got = vec![0f32; group * head_dim];
                    let mut scratch = AttentionScratch::default();
                    TwoPass::run::<SoftWiden>(&geo, &task, &mut want, &mut scratch);
                    // SAFETY: checked above that the CPU has the features.
                    unsafe { avx2::attend_row(&geo, &task, &mut got, &mut scratch) };
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{order:?} hd {head_dim} len {len}");
                }
            }
        }
    }
}

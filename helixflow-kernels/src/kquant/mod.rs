//! ggml's K-quant formats `Q4_K`, `Q5_K` and `Q6_K`: 256-value superblocks with sub-block
//! scales, multiplied with `Q8_K` activation blocks.
//!
//! As for the 32-value formats in [`crate::dot`], each dot product keeps the lane layout of
//! ggml's AVX2 kernel (`ggml_vec_dot_q4_K_q8_K`, `ggml_vec_dot_q6_K_q8_K` in
//! `ggml-cpu/arch/x86/quants.c`): lane `j` of an eight-lane f32 accumulator takes the exact
//! integer sum of values `4j..4j+4` of every 32-value group of a superblock, times the
//! sub-block scales, and adds it times the superblock scale with one fused multiply-add per
//! superblock; the lanes are reduced with [`hsum8`](crate::math::hsum8). The scalar functions
//! are the reference; the vector kernels (AVX2, AVX-512 VNNI, NEON with or without the
//! dotprod extension) compute the same numbers several activation rows at a time, sharing the
//! unpacking of each weight superblock. Their integer sums are exact, so every kernel gives
//! the reference's bits.

#[cfg(target_arch = "aarch64")]
mod neon;
mod q4k;
mod q5k;
mod q6k;
mod q8k;
pub mod scale_min;

pub use q4k::{dot_q4k_reference, dot_q4k_tiled_reference, BlockQ4K};
pub use q5k::{dot_q5k_reference, dot_q5k_tiled_reference, BlockQ5K};
pub use q6k::{dot_q6k_reference, dot_q6k_tiled_reference, BlockQ6K};
pub use q8k::{quantize_row_q8k, BlockQ8K};

use crate::dot::Isa;

/// Values per superblock in every K-quant format.
pub const QK_K: usize = 256;

/// Reads little-endian GGUF bytes as blocks of `size` bytes each.
fn parse<T>(bytes: &[u8], size: usize, read: impl Fn(&[u8]) -> T) -> Vec<T> {
    bytes.chunks_exact(size).map(read).collect()
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// The order in which a K-quant product adds up its superblocks. ggml has two: its
/// `vec_dot` kernels, which llama.cpp runs on a batch of fewer than eight activation rows,
/// and its tiled matrix kernel (`ggml-cpu/tiled`), which it runs on eight rows or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KQuantOrder {
    /// `vec_dot`'s: eight f32 lanes, each superblock's integer lane sums scaled into them with
    /// a fused multiply-add, reduced at the end ([`dot_q4k_reference`]).
    #[default]
    Lanes,
    /// The tiled kernel's: each superblock's whole integer sum converted and scaled once, and
    /// added into one running f32 sum with a fused multiply-add ([`dot_q4k_tiled_reference`]).
    Tiled,
}

/// Dot products of one K-quant weight row `x` with each of `out.len()` activation rows stored
/// back to back in `acts`, in the order `order`, with the kernels of `isa`, or the reference
/// where this CPU lacks them. Every kernel gives the reference's bits.
pub fn dot_rows_with<W: KQuantKernels>(
    isa: Isa,
    order: KQuantOrder,
    x: &[W],
    acts: &[BlockQ8K],
    out: &mut [f32],
) {
    assert!(
        acts.len() == x.len() * out.len(),
        "K-quant dot products: {} weight blocks, {} activation blocks, {} outputs",
        x.len(),
        acts.len(),
        out.len()
    );
    if x.is_empty() {
        out.fill(0.0);
        return;
    }
    let tiled = order == KQuantOrder::Tiled;
    // One weight row is a matrix of one row.
    #[cfg(target_arch = "x86_64")]
    if matrix_x86(isa, order, x, x.len(), acts, out) {
        return;
    }
    if isa.is_supported() {
        // The tiled order has no NEON kernel of its own: it takes the reference below.
        #[cfg(target_arch = "aarch64")]
        if matches!(isa, Isa::Neon | Isa::NeonDotprod) && !tiled {
            // SAFETY: `is_supported` checked NEON, and dotprod for `NeonDotprod`.
            return unsafe { W::rows_neon(x, acts, out, isa == Isa::NeonDotprod) };
        }
    }
    for (o, y) in out.iter_mut().zip(acts.chunks_exact(x.len())) {
        *o = if tiled {
            W::tiled_reference(x, y)
        } else {
            W::reference(x, y)
        };
    }
}

/// Dot products of every weight row of `x` (rows of `nb` superblocks, back to back) with every
/// activation row of `acts`, into `out[w * n + r]` for weight row `w` and activation row `r`
/// of `n`, in the order `order`, with the kernels of `isa` (or the reference). The vector
/// kernels loop over the weight rows themselves: a decode step's product is thousands of
/// rows of a few superblocks, and a call per row cost a fifth of a 1B model's decoding.
pub fn dot_matrix_with<W: KQuantKernels>(
    isa: Isa,
    order: KQuantOrder,
    x: &[W],
    nb: usize,
    acts: &[BlockQ8K],
    out: &mut [f32],
) {
    let n = acts.len() / nb.max(1);
    assert!(
        nb > 0
            && x.len().is_multiple_of(nb)
            && acts.len() == n * nb
            && out.len() == x.len() / nb * n,
        "K-quant matrix: {} weight blocks, {} activation blocks of {nb} per row, {} outputs",
        x.len(),
        acts.len(),
        out.len()
    );
    #[cfg(target_arch = "x86_64")]
    if matrix_x86(isa, order, x, nb, acts, out) {
        return;
    }
    for (row, o) in x.chunks_exact(nb).zip(out.chunks_exact_mut(n)) {
        dot_rows_with(isa, order, row, acts, o);
    }
}

/// [`dot_matrix_with`] with the x86 kernels of `isa`, if it names them and this CPU has them;
/// `false` (nothing written) otherwise.
#[cfg(target_arch = "x86_64")]
fn matrix_x86<W: KQuantKernels>(
    isa: Isa,
    order: KQuantOrder,
    x: &[W],
    nb: usize,
    acts: &[BlockQ8K],
    out: &mut [f32],
) -> bool {
    if !isa.is_supported() {
        return false;
    }
    let tiled = order == KQuantOrder::Tiled;
    // SAFETY: `is_supported` checked the features each kernel is compiled for.
    unsafe {
        match (isa, tiled) {
            (Isa::Avx512Vnni, false) => W::matrix_vnni::<false>(x, nb, acts, out),
            (Isa::Avx512Vnni, true) => W::matrix_vnni::<true>(x, nb, acts, out),
            (Isa::Avx2, false) => W::matrix_avx2::<false>(x, nb, acts, out),
            (Isa::Avx2, true) => W::matrix_avx2::<true>(x, nb, acts, out),
            _ => return false,
        }
    }
    true
}

/// `impl QuantFormat` (ggml's name `$name`) and `impl KQuantKernels` for `$block`:
/// `$reference` and `$tiled_reference`, the kernels of the format's `avx2` module, and
/// `neon::$neon`.
macro_rules! kquant_format {
    ($block:ty, $name:literal, $reference:path, $tiled_reference:path, $neon:ident) => {
        impl $crate::format::QuantFormat for $block {
            type Act = BlockQ8K;
            const NAME: &'static str = $name;
            const BLOCK_VALUES: usize = QK_K;
            const BYTES: usize = <$block>::BYTES;

            fn parse_all(bytes: &[u8]) -> Vec<Self> {
                <$block>::parse_all(bytes)
            }
            fn dequantize(&self, out: &mut [f32]) {
                <$block>::dequantize(self, out)
            }
            fn quantize_acts(x: &[f32], out: &mut [BlockQ8K]) {
                $crate::kquant::quantize_row_q8k(x, out)
            }
            fn dot_reference(x: &[Self], y: &[BlockQ8K]) -> f32 {
                $reference(x, y)
            }
            fn dot_rows(x: &[Self], acts: &[BlockQ8K], out: &mut [f32]) {
                let isa = $crate::dot::Isa::best();
                $crate::kquant::dot_rows_with(
                    isa,
                    $crate::kquant::KQuantOrder::Lanes,
                    x,
                    acts,
                    out,
                );
            }
            const HAS_TILED_ORDER: bool = true;
            fn dot_rows_tiled(x: &[Self], acts: &[BlockQ8K], out: &mut [f32]) {
                let isa = $crate::dot::Isa::best();
                $crate::kquant::dot_rows_with(
                    isa,
                    $crate::kquant::KQuantOrder::Tiled,
                    x,
                    acts,
                    out,
                );
            }
            fn dot_matrix(x: &[Self], nb: usize, acts: &[BlockQ8K], out: &mut [f32]) {
                let (isa, order) = ($crate::dot::Isa::best(), $crate::kquant::KQuantOrder::Lanes);
                $crate::kquant::dot_matrix_with(isa, order, x, nb, acts, out);
            }
        }

        impl KQuantKernels for $block {
            fn reference(x: &[Self], y: &[BlockQ8K]) -> f32 {
                $reference(x, y)
            }

            fn tiled_reference(x: &[Self], y: &[BlockQ8K]) -> f32 {
                $tiled_reference(x, y)
            }

            #[cfg(target_arch = "x86_64")]
            unsafe fn matrix_avx2<const TILED: bool>(
                x: &[Self],
                nb: usize,
                acts: &[BlockQ8K],
                out: &mut [f32],
            ) {
                // SAFETY: the caller guarantees the CPU features.
                unsafe { avx2::matrix_avx2::<TILED>(x, nb, acts, out) }
            }

            #[cfg(target_arch = "x86_64")]
            unsafe fn matrix_vnni<const TILED: bool>(
                x: &[Self],
                nb: usize,
                acts: &[BlockQ8K],
                out: &mut [f32],
            ) {
                // SAFETY: the caller guarantees the CPU features.
                unsafe { avx2::matrix_vnni::<TILED>(x, nb, acts, out) }
            }

            #[cfg(target_arch = "aarch64")]
            unsafe fn rows_neon(x: &[Self], acts: &[BlockQ8K], out: &mut [f32], dotprod: bool) {
                // SAFETY: the caller guarantees the CPU features.
                unsafe { super::neon::$neon(x, acts, out, dotprod) }
            }
        }
    };
}
use kquant_format;

/// A K-quant format's reference dot product and its vector kernels, for [`dot_rows_with`].
pub trait KQuantKernels: Sized {
    /// The scalar reference dot product of one weight row with one activation row.
    fn reference(x: &[Self], y: &[BlockQ8K]) -> f32;

    /// [`Self::reference`] in the order [`KQuantOrder::Tiled`].
    fn tiled_reference(x: &[Self], y: &[BlockQ8K]) -> f32;

    /// [`dot_matrix_with`] with AVX2, in the order [`KQuantOrder::Tiled`] if `TILED`.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn matrix_avx2<const TILED: bool>(
        x: &[Self],
        nb: usize,
        acts: &[BlockQ8K],
        out: &mut [f32],
    );

    /// [`dot_matrix_with`] with AVX-512 VNNI's `vpdpwssd` scaling and adding the sub-block
    /// sums, in the order [`KQuantOrder::Tiled`] if `TILED`.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C, AVX-512F, AVX-512VL and AVX-512 VNNI.
    #[cfg(target_arch = "x86_64")]
    unsafe fn matrix_vnni<const TILED: bool>(
        x: &[Self],
        nb: usize,
        acts: &[BlockQ8K],
        out: &mut [f32],
    );

    /// [`dot_rows_with`] with NEON, its byte products by `sdot` if `dotprod`.
    ///
    /// # Safety
    /// The CPU must support NEON, and the dotprod extension if `dotprod` is true.
    #[cfg(target_arch = "aarch64")]
    unsafe fn rows_neon(x: &[Self], acts: &[BlockQ8K], out: &mut [f32], dotprod: bool);
}

/// What the AVX2 kernels of both formats share.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::BlockQ8K;

    /// Activation rows handled together, sharing each unpacked weight superblock.
    pub(super) const TILE: usize = 4;
    /// The same with AVX-512's 32 registers, which hold eight rows' accumulators: a prompt's
    /// rows unpack each superblock half as often.
    pub(super) const TILE_VNNI: usize = 8;

    /// How a kernel adds sub-block scales times i16 pair sums into i32 lanes.
    pub(super) trait ScaledSum {
        /// `acc` plus, in each i32 lane, the two products of the i16 pairs of `scales` and
        /// `p16`.
        fn add(acc: __m256i, scales: __m256i, p16: __m256i) -> __m256i;
    }

    /// AVX2: `vpmaddwd`, then `vpaddd`.
    pub(super) struct Madd;

    impl ScaledSum for Madd {
        #[inline(always)]
        fn add(acc: __m256i, scales: __m256i, p16: __m256i) -> __m256i {
            // SAFETY: only inlined into kernels compiled with AVX2.
            unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(scales, p16)) }
        }
    }

    /// AVX-512 VNNI: `vpdpwssd`, one instruction.
    pub(super) struct Vnni;

    impl ScaledSum for Vnni {
        #[inline(always)]
        fn add(acc: __m256i, scales: __m256i, p16: __m256i) -> __m256i {
            // SAFETY: only inlined into kernels compiled with AVX-512 VNNI and VL.
            unsafe { _mm256_dpwssd_epi32(acc, scales, p16) }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn f16_to_f32(bits: u16) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }

    /// ggml's `hsum_float_8`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn hsum8(v: __m256) -> f32 {
        let r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
        let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
    }

    /// The four-lane reduction ggml's `Q4_K` kernel ends its mins accumulator with.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn hsum4(v: __m128) -> f32 {
        let r = _mm_add_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
    }

    /// The sum of the eight i32 lanes of `v` (exact: the tiled order's whole superblock sum).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn sum_i32x8(v: __m256i) -> i32 {
        let r = _mm_add_epi32(_mm256_extracti128_si256::<1>(v), _mm256_castsi256_si128(v));
        sum_i32x4(r)
    }

    /// Lane `r` the sum of the eight i32 lanes of `v[r]` (exact, in any order): eight rows'
    /// whole-superblock sums reduced together.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn transpose_sum8(v: [__m256i; 8]) -> __m256i {
        let a01 = _mm256_hadd_epi32(v[0], v[1]);
        let a23 = _mm256_hadd_epi32(v[2], v[3]);
        let a45 = _mm256_hadd_epi32(v[4], v[5]);
        let a67 = _mm256_hadd_epi32(v[6], v[7]);
        // Lanes 0..4: rows 0..4's sums of lanes 0..4; lanes 4..8: of lanes 4..8.
        let b03 = _mm256_hadd_epi32(a01, a23);
        let b47 = _mm256_hadd_epi32(a45, a67);
        let low = _mm256_permute2x128_si256::<0x20>(b03, b47);
        let high = _mm256_permute2x128_si256::<0x31>(b03, b47);
        _mm256_add_epi32(low, high)
    }

    /// The eight lanes of `v` into `out[..8]`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn store8(v: __m256, out: &mut [f32]) {
        let out = &mut out[..8];
        // SAFETY: `out` is eight writable f32; the store is unaligned.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    }

    /// The sum of the four i32 lanes of `v`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn sum_i32x4(v: __m128i) -> i32 {
        let r = _mm_add_epi32(v, _mm_unpackhi_epi64(v, v));
        _mm_cvtsi128_si32(_mm_add_epi32(r, _mm_shuffle_epi32::<1>(r)))
    }

    /// 32 bytes from the start of `bytes`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn load32<T: Copy>(bytes: &[T]) -> __m256i {
        let bytes = &bytes[..32 / size_of::<T>()];
        // SAFETY: `bytes` is 32 readable bytes; the load is unaligned.
        unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
    }

    /// 16 bytes from the start of `bytes`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn load16(bytes: &[u8]) -> __m128i {
        let bytes = &bytes[..16];
        // SAFETY: `bytes` is 16 readable bytes; the load is unaligned.
        unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }
    }

    /// Weight rows are read once per token, straight from memory: ask for the bytes a few
    /// superblocks ahead so that the loads of the next ones do not stall, every cache line of
    /// the superblock (144 to 210 bytes: asking for one line per superblock left the others
    /// to the hardware prefetcher, and decoding a 1B model read 15 GB/s of 57).
    #[inline(always)]
    pub(super) fn prefetch_ahead<T>(block: &T) {
        const AHEAD: usize = 2048;
        let ptr = (block as *const T).cast::<i8>().wrapping_add(AHEAD);
        for line in (0..size_of::<T>()).step_by(64) {
            // SAFETY: a prefetch is a hint; it never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.wrapping_add(line)) };
        }
    }

    /// The first `R` activation rows of `nb` blocks each, as slices of exactly `nb` blocks:
    /// indexing them by a weight superblock's index then needs no bounds check.
    #[inline(always)]
    pub(super) fn act_rows<const R: usize>(acts: &[BlockQ8K], nb: usize) -> [&[BlockQ8K]; R] {
        std::array::from_fn(|r| &acts[r * nb..(r + 1) * nb])
    }

    /// Runs `tile::<S, R, TILED>` over the rows in groups of `$rows` (default [`TILE`]), then
    /// one at a time.
    macro_rules! rows_in_tiles {
        ($tile:ident::<$s:ty, $tiled:ident>, $x:expr, $acts:expr, $out:expr) => {
            rows_in_tiles!($tile::<$s, $tiled>, TILE, $x, $acts, $out)
        };
        ($tile:ident::<$s:ty, $tiled:ident>, $rows:expr, $x:expr, $acts:expr, $out:expr) => {{
            let nb = $x.len();
            let mut chunks = $out.chunks_exact_mut($rows);
            let mut row = 0;
            for chunk in &mut chunks {
                $tile::<$s, { $rows }, $tiled>($x, &$acts[row * nb..], chunk);
                row += $rows;
            }
            for o in chunks.into_remainder().chunks_mut(1) {
                $tile::<$s, 1, $tiled>($x, &$acts[row * nb..], o);
                row += 1;
            }
        }};
    }
    pub(super) use rows_in_tiles;

    /// A format's `matrix_avx2` and `matrix_vnni`: its `tile_avx2` and `tile_vnni` (the same
    /// kernel compiled for each instruction set) over each weight row and the activation rows.
    macro_rules! entry_points {
        ($block:ty) => {
            /// [`KQuantKernels::matrix_avx2`](super::super::KQuantKernels::matrix_avx2).
            ///
            /// # Safety
            /// The CPU must support AVX2, FMA and F16C.
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(super) unsafe fn matrix_avx2<const TILED: bool>(
                x: &[$block],
                nb: usize,
                acts: &[BlockQ8K],
                out: &mut [f32],
            ) {
                let n = acts.len() / nb;
                for (row, o) in x.chunks_exact(nb).zip(out.chunks_exact_mut(n)) {
                    rows_in_tiles!(tile_avx2::<Madd, TILED>, row, acts, o)
                }
            }

            /// [`KQuantKernels::matrix_vnni`](super::super::KQuantKernels::matrix_vnni).
            ///
            /// # Safety
            /// The CPU must support AVX2, FMA, F16C, AVX-512F, AVX-512VL and AVX-512 VNNI.
            #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
            pub(super) unsafe fn matrix_vnni<const TILED: bool>(
                x: &[$block],
                nb: usize,
                acts: &[BlockQ8K],
                out: &mut [f32],
            ) {
                let n = acts.len() / nb;
                for (row, o) in x.chunks_exact(nb).zip(out.chunks_exact_mut(n)) {
                    rows_in_tiles!(tile_vnni::<Vnni, TILED>, TILE_VNNI, row, acts, o)
                }
            }
        };
    }
    pub(super) use entry_points;
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::format::QuantFormat;

    /// `rows` activation rows of `nb` superblocks each, quantised.
    pub(super) fn activations(rng: &mut StdRng, rows: usize, nb: usize) -> Vec<BlockQ8K> {
        let x: Vec<f32> = (0..rows * nb * QK_K)
            .map(|_| rng.random_range(-3.0f32..3.0))
            .collect();
        let mut acts = vec![BlockQ8K::default(); rows * nb];
        for (row, blocks) in x.chunks_exact(nb * QK_K).zip(acts.chunks_exact_mut(nb)) {
            quantize_row_q8k(row, blocks);
        }
        acts
    }

    /// Every kernel this CPU has must give the scalar reference's results bit for bit, for odd
    /// superblock counts and every tile remainder; and the reference must be the dot product
    /// of the dequantised weights and activations, up to f32 rounding.
    pub(super) fn check<W: QuantFormat<Act = BlockQ8K> + KQuantKernels>(
        make: impl Fn(&mut StdRng) -> W,
    ) {
        let isas = Isa::supported();
        eprintln!("{}: checking {isas:?}", W::NAME);
        let mut rng = StdRng::seed_from_u64(7);
        for nb in [1, 2, 3, 5] {
            let weights: Vec<W> = (0..nb).map(|_| make(&mut rng)).collect();
            let mut w = vec![0f32; nb * QK_K];
            for (block, o) in weights.iter().zip(w.chunks_exact_mut(QK_K)) {
                block.dequantize(o);
            }
            for rows in 1..=9 {
                let acts = activations(&mut rng, rows, nb);
                let mut fast = vec![vec![0f32; rows]; isas.len()];
                let mut tiled = vec![vec![0f32; rows]; isas.len()];
                for ((&isa, out), tiled) in isas.iter().zip(&mut fast).zip(&mut tiled) {
                    dot_rows_with(isa, KQuantOrder::Lanes, &weights, &acts, out);
                    dot_rows_with(isa, KQuantOrder::Tiled, &weights, &acts, tiled);
                }
                for r in 0..rows {
                    let y = &acts[r * nb..(r + 1) * nb];
                    let want = W::dot_reference(&weights, y);
                    let want_tiled = W::tiled_reference(&weights, y);
                    for ((isa, got), tiled) in isas.iter().zip(&fast).zip(&tiled) {
                        assert_eq!(
                            got[r].to_bits(),
                            want.to_bits(),
                            "{isa:?} nb {nb} rows {rows} row {r}"
                        );
                        assert_eq!(
                            tiled[r].to_bits(),
                            want_tiled.to_bits(),
                            "{isa:?} tiled, nb {nb} rows {rows} row {r}"
                        );
                    }
                    let (exact, magnitude) = dequantised_dot(&w, y);
                    assert!(
                        (f64::from(want_tiled) - exact).abs() <= 1e-5 * magnitude,
                        "tiled, nb {nb} row {r}: {want_tiled} vs {exact}"
                    );

                    let (exact, magnitude) = dequantised_dot(&w, y);
                    assert!(
                        (f64::from(want) - exact).abs() <= 1e-5 * magnitude,
                        "nb {nb} row {r}: {want} vs {exact} (magnitude {magnitude})"
                    );
                }
            }
            // Several weight rows at once: each output its row's reference.
            let matrix: Vec<W> = (0..3 * nb).map(|_| make(&mut rng)).collect();
            for n in [1, 5] {
                let acts = activations(&mut rng, n, nb);
                for &isa in &isas {
                    for order in [KQuantOrder::Lanes, KQuantOrder::Tiled] {
                        let mut out = vec![0f32; 3 * n];
                        dot_matrix_with(isa, order, &matrix, nb, &acts, &mut out);
                        for (i, got) in out.iter().enumerate() {
                            let (x, y) = (&matrix[i / n * nb..][..nb], &acts[i % n * nb..][..nb]);
                            let want = match order {
                                KQuantOrder::Lanes => W::dot_reference(x, y),
                                KQuantOrder::Tiled => W::tiled_reference(x, y),
                            };
                            assert_eq!(got.to_bits(), want.to_bits(), "{isa:?} {order:?} matrix");
                        }
                    }
                }
            }
        }
    }

    /// xorshift64, as the C program that computed [`GGML_GOLDEN`] drew its inputs.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 16) as u32
        }

        /// A block of `bytes` random bytes with a random f16 scale (about 1e-4..2e-3) at each
        /// of `scales`.
        fn block(&mut self, bytes: usize, scales: &[usize]) -> Vec<u8> {
            let mut block: Vec<u8> = (0..bytes).map(|_| self.next() as u8).collect();
            for &at in scales {
                let d = 0x0800 + self.next() % 0x1000;
                block[at..at + 2].copy_from_slice(&(d as u16).to_le_bytes());
            }
            block
        }
    }

    /// Results of ggml's own `quantize_row_q8_K_ref`, `ggml_vec_dot_q4_K_q8_K` and
    /// `ggml_vec_dot_q6_K_q8_K` (AVX2 build), `dequantize_row_q4_K` and `dequantize_row_q6_K`
    /// on the inputs [`kquant_match_ggml`] draws: superblocks, the two dot products' bits,
    /// and hashes of the bits of the dequantised weights and of the `Q8_K` values. The `Q6_K`
    /// products are those of the ggml that llama-cpp-python 0.3.36 builds (libggml 0.25.3,
    /// called through ctypes on the same inputs), whose AVX2 kernel subtracts the offset of
    /// 32 once per superblock from the sub-block sums rather than from every product.
    #[rustfmt::skip]
    const GGML_GOLDEN: [(usize, u32, u32, u64, u64, u64); 4] = [
        (1, 0xc1bf008c, 0x43e10f70, 0x187e37f193c05650, 0x095b3abd9810d7b4, 0x16b14e6d2a4e0ae3),
        (2, 0x408d67a2, 0xc213a295, 0x00152b1af091b430, 0x500c9399a836c690, 0xd7345925b6f7221c),
        (3, 0x429c4d66, 0x44bd457c, 0xee217824df09de88, 0xfb787bfa75974b18, 0xcdb45ad1bae89f7b),
        (5, 0xc12d56a3, 0xc2253fd2, 0x5522ddfe2c4abcf8, 0x6780d48087d7dbaa, 0xa67f3edd923dc557),
    ];

    fn hash(values: impl Iterator<Item = u64>) -> u64 {
        values.fold(0u64, |h, v| h.wrapping_mul(31).wrapping_add(v))
    }

    #[test]
    fn kquant_match_ggml() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for (case, &(nb, dot4, dot6, h4, h6, hq)) in GGML_GOLDEN.iter().enumerate() {
            let (mut b4, mut b6) = (Vec::new(), Vec::new());
            for _ in 0..nb {
                b4.extend(rng.block(BlockQ4K::BYTES, &[0, 2]));
                b6.extend(rng.block(BlockQ6K::BYTES, &[208]));
            }
            let (x4, x6) = (BlockQ4K::parse_all(&b4), BlockQ6K::parse_all(&b6));
            // Halves with a largest magnitude of 127 in every block, so products land exactly
            // on ties; every other case replaces them with values in (-3, 3).
            let mut act: Vec<f32> = (0..nb * QK_K)
                .map(|_| ((rng.next() % 255) as i32 - 127) as f32 / 2.0)
                .collect();
            for block in act.chunks_exact_mut(QK_K) {
                let at = rng.next() as usize % QK_K;
                block[at] = if rng.next() & 1 == 1 { 127.0 } else { -127.0 };
            }
            if case % 2 == 1 {
                act = (0..nb * QK_K)
                    .map(|_| ((rng.next() % 60001) as i32 - 30000) as f32 / 10000.0)
                    .collect();
            }
            let mut q8 = vec![BlockQ8K::default(); nb];
            quantize_row_q8k(&act, &mut q8);
            let qs = q8.iter().flat_map(|b| b.qs).map(|q| u64::from(q as u8));
            assert_eq!(hash(qs), hq, "case {case}: Q8_K values");

            let mut out = [0f32];
            assert_eq!(
                dot_q4k_reference(&x4, &q8).to_bits(),
                dot4,
                "case {case}: Q4_K"
            );
            for isa in Isa::supported() {
                dot_rows_with(isa, KQuantOrder::Lanes, &x4, &q8, &mut out);
                assert_eq!(out[0].to_bits(), dot4, "case {case}: Q4_K {isa:?}");
            }
            assert_eq!(
                dot_q6k_reference(&x6, &q8).to_bits(),
                dot6,
                "case {case}: Q6_K"
            );
            for isa in Isa::supported() {
                dot_rows_with(isa, KQuantOrder::Lanes, &x6, &q8, &mut out);
                assert_eq!(out[0].to_bits(), dot6, "case {case}: Q6_K {isa:?}");
            }

            let mut w = vec![0f32; nb * QK_K];
            for (block, o) in x4.iter().zip(w.chunks_exact_mut(QK_K)) {
                block.dequantize(o);
            }
            assert_eq!(
                hash(w.iter().map(|v| u64::from(v.to_bits()))),
                h4,
                "case {case}"
            );
            for (block, o) in x6.iter().zip(w.chunks_exact_mut(QK_K)) {
                block.dequantize(o);
            }
            assert_eq!(
                hash(w.iter().map(|v| u64::from(v.to_bits()))),
                h6,
                "case {case}"
            );
        }
    }

    /// The f64 dot product of weights `w` with the dequantised activations, and the sum of
    /// the products' magnitudes (the scale of its rounding error).
    fn dequantised_dot(w: &[f32], y: &[BlockQ8K]) -> (f64, f64) {
        let mut dot = 0f64;
        let mut magnitude = 0f64;
        for (w, yb) in w.chunks_exact(QK_K).zip(y) {
            for (&w, &q) in w.iter().zip(&yb.qs) {
                let p = f64::from(w) * f64::from(yb.d) * f64::from(q);
                dot += p;
                magnitude += p.abs();
            }
        }
        (dot, magnitude)
    }
}

//! Dot products of one quantised weight row with quantised activation rows.
//!
//! Each product keeps ggml's AVX2 lane layout: lane `j` of an eight-lane f32 accumulator takes
//! the integer sum of values `4j..4j+4` of every block, scaled by the block's two scales with a
//! fused multiply-add; the lanes are then reduced with [`hsum8`]. The scalar functions are the
//! reference; the AVX2 ones compute the same numbers several activation rows at a time.

use half::f16;

use crate::features::{has_avx2_fma, has_avx512_vnni, has_neon, has_neon_dotprod};
use crate::math::hsum8;
use crate::quant::{ActBlock, BlockQ4_0, BlockQ4_1, BlockQ5_1, BlockQ8_0};

/// A weight block type with a dot product against activation blocks.
pub trait WeightBlock: Copy + Send + Sync {
    /// The value of element `i` (0..32) as a small integer, before scaling.
    fn value(&self, i: usize) -> i32;
    /// The block's scale.
    fn scale(&self) -> f32;
    /// The block's minimum, if the format has one.
    fn min(&self) -> Option<f32> {
        None
    }
}

impl WeightBlock for BlockQ4_0 {
    fn value(&self, i: usize) -> i32 {
        nibble(&self.qs, i) - 8
    }
    fn scale(&self) -> f32 {
        f16::from_bits(self.d).to_f32()
    }
}

impl WeightBlock for BlockQ4_1 {
    fn value(&self, i: usize) -> i32 {
        nibble(&self.qs, i)
    }
    fn scale(&self) -> f32 {
        f16::from_bits(self.d).to_f32()
    }
    fn min(&self) -> Option<f32> {
        Some(f16::from_bits(self.m).to_f32())
    }
}

impl WeightBlock for BlockQ5_1 {
    fn value(&self, i: usize) -> i32 {
        i32::from(self.qs[i])
    }
    fn scale(&self) -> f32 {
        f16::from_bits(self.d).to_f32()
    }
    fn min(&self) -> Option<f32> {
        Some(f16::from_bits(self.m).to_f32())
    }
}

impl WeightBlock for BlockQ8_0 {
    fn value(&self, i: usize) -> i32 {
        i32::from(self.qs[i])
    }
    fn scale(&self) -> f32 {
        f16::from_bits(self.d).to_f32()
    }
}

fn nibble(qs: &[u8; 16], i: usize) -> i32 {
    if i < 16 {
        i32::from(qs[i] & 0x0f)
    } else {
        i32::from(qs[i - 16] >> 4)
    }
}

/// The reference dot product of one weight row with one activation row.
pub fn dot_scalar<W: WeightBlock>(x: &[W], y: &[ActBlock]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut mins = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        if let Some(m) = xb.min() {
            // ggml's `summs += m * s`, which the compiler contracts into a fused multiply-add.
            mins = m.mul_add(yb.s, mins);
        }
        let scale = xb.scale() * yb.d;
        for (j, lane) in lanes.iter_mut().enumerate() {
            let sum: i32 = (4 * j..4 * j + 4)
                .map(|i| xb.value(i) * i32::from(yb.qs[i]))
                .sum();
            *lane = scale.mul_add(sum as f32, *lane);
        }
    }
    hsum8(&lanes) + mins
}

/// The reference dot product in block order ([`crate::packed::Accumulation::Blocks`]): each
/// block's 32 products summed as integers, then scaled once.
pub fn dot_blocks<W: WeightBlock>(x: &[W], y: &[ActBlock]) -> f32 {
    let (mut acc, mut mins) = (0f32, 0f32);
    for (xb, yb) in x.iter().zip(y) {
        let sum: i32 = (0..32).map(|i| xb.value(i) * i32::from(yb.qs[i])).sum();
        acc = (xb.scale() * yb.d).mul_add(sum as f32, acc);
        if let Some(m) = xb.min() {
            mins = m.mul_add(yb.s, mins);
        }
    }
    acc + mins
}

/// The instruction sets a kernel can run with, from the reference up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// The portable scalar reference.
    Scalar,
    /// AVX2, FMA and F16C.
    Avx2,
    /// AVX2 with AVX-512 VNNI's byte dot product on 256-bit registers.
    Avx512Vnni,
    /// aarch64's NEON, byte products with `smull` (see `neon.rs`).
    Neon,
    /// NEON with the dotprod extension's `sdot`.
    NeonDotprod,
}

impl Isa {
    /// The best level this CPU supports (and the environment allows, see [`crate::features`]).
    pub fn best() -> Self {
        if has_avx512_vnni() {
            Self::Avx512Vnni
        } else if has_avx2_fma() {
            Self::Avx2
        } else if has_neon_dotprod() {
            Self::NeonDotprod
        } else if has_neon() {
            Self::Neon
        } else {
            Self::Scalar
        }
    }

    /// Every level this CPU supports, for tests that hold each one to the reference.
    pub fn supported() -> Vec<Self> {
        [
            Self::Scalar,
            Self::Avx2,
            Self::Avx512Vnni,
            Self::Neon,
            Self::NeonDotprod,
        ]
        .into_iter()
        .filter(|&isa| isa.is_supported())
        .collect()
    }

    pub(crate) fn is_supported(self) -> bool {
        match self {
            Self::Scalar => true,
            Self::Avx2 => has_avx2_fma(),
            Self::Avx512Vnni => has_avx512_vnni(),
            Self::Neon => has_neon(),
            Self::NeonDotprod => has_neon_dotprod(),
        }
    }
}

/// Dot products of one weight row (`nb` blocks) with each of `out.len()` activation rows
/// stored back to back in `acts`.
pub fn dot_rows<W: WeightBlock + SimdDot>(x: &[W], acts: &[ActBlock], out: &mut [f32]) {
    dot_matrix(x, x.len(), acts, out);
}

/// Dot products of every weight row of `x` (rows of `nb` blocks, back to back) with every
/// activation row of `acts` (the same), into `out[w * n + r]` for weight row `w` and
/// activation row `r` of `n`.
pub fn dot_matrix<W: WeightBlock + SimdDot>(
    x: &[W],
    nb: usize,
    acts: &[ActBlock],
    out: &mut [f32],
) {
    dot_matrix_with(Isa::best(), x, nb, acts, out);
}

/// [`dot_matrix`] with the kernels of `isa`, or the reference if this CPU lacks it.
pub fn dot_matrix_with<W: WeightBlock + SimdDot>(
    isa: Isa,
    x: &[W],
    nb: usize,
    acts: &[ActBlock],
    out: &mut [f32],
) {
    let n = acts.len() / nb;
    assert!(
        x.len().is_multiple_of(nb) && acts.len() == n * nb && out.len() == x.len() / nb * n,
        "dot_matrix: {} weight blocks, {} activation blocks of {nb} per row, {} outputs",
        x.len(),
        acts.len(),
        out.len()
    );
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: `is_supported` checked the CPU features each kernel is compiled for.
        Isa::Avx512Vnni if isa.is_supported() => {
            return unsafe { W::matrix_vnni(x, nb, acts, out) }
        }
        Isa::Avx2 if isa.is_supported() => return unsafe { W::matrix_avx2(x, nb, acts, out) },
        _ => {}
    }
    #[cfg(target_arch = "aarch64")]
    if isa.is_supported() && matches!(isa, Isa::Neon | Isa::NeonDotprod) {
        let dotprod = isa == Isa::NeonDotprod;
        // SAFETY: `is_supported` checked NEON, and dotprod for `NeonDotprod`.
        return unsafe { W::matrix_neon(x, nb, acts, out, dotprod) };
    }
    let _ = isa;
    for (row, o) in x.chunks_exact(nb).zip(out.chunks_exact_mut(n)) {
        for (o, y) in o.iter_mut().zip(acts.chunks_exact(nb)) {
            *o = dot_scalar(row, y);
        }
    }
}

/// Weight blocks with vectorised kernels for [`dot_matrix`].
pub trait SimdDot: Sized {
    /// [`dot_matrix`] with AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn matrix_avx2(x: &[Self], nb: usize, acts: &[ActBlock], out: &mut [f32]);

    /// [`dot_matrix`] with AVX2 and AVX-512 VNNI.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C, AVX-512F, AVX-512VL and AVX-512 VNNI.
    #[cfg(target_arch = "x86_64")]
    unsafe fn matrix_vnni(x: &[Self], nb: usize, acts: &[ActBlock], out: &mut [f32]);

    /// [`dot_matrix`] with NEON, its byte products by the dotprod extension's `sdot` if
    /// `dotprod` (the kernels are in `neon.rs`).
    ///
    /// # Safety
    /// The CPU must support NEON, and the dotprod extension if `dotprod` is true.
    #[cfg(target_arch = "aarch64")]
    unsafe fn matrix_neon(x: &[Self], nb: usize, acts: &[ActBlock], out: &mut [f32], dotprod: bool);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::cell::RefCell;

    use super::SimdDot;
    use crate::quant::{ActBlock, BlockQ4_0, BlockQ4_1, BlockQ5_1, BlockQ8_0};

    /// Activation rows handled together, sharing each unpacked weight block.
    const TILE: usize = 4;
    /// Weight rows interleaved for a single activation row, so that their independent chains
    /// of multiply-adds hide each other's latency.
    const WEIGHT_TILE: usize = 4;

    /// Products of 32 unsigned bytes with 32 signed bytes, summed in fours into eight i32
    /// lanes. Every kernel's pairs of products stay within i16 (|unsigned| ≤ 128 and
    /// |signed| ≤ 127, or |unsigned| ≤ 15), so `maddubs`'s saturation never applies and both
    /// implementations give the same sums.
    trait ByteDot {
        fn dot(ax: __m256i, sy: __m256i) -> __m256i;
    }

    /// AVX2: `vpmaddubsw` into i16 pairs, then `vpmaddwd` with ones.
    struct Madd;

    impl ByteDot for Madd {
        #[inline(always)]
        fn dot(ax: __m256i, sy: __m256i) -> __m256i {
            // SAFETY: only inlined into kernels compiled with AVX2.
            unsafe { _mm256_madd_epi16(_mm256_set1_epi16(1), _mm256_maddubs_epi16(ax, sy)) }
        }
    }

    /// AVX-512 VNNI: `vpdpbusd`, one instruction.
    struct Vnni;

    impl ByteDot for Vnni {
        #[inline(always)]
        fn dot(ax: __m256i, sy: __m256i) -> __m256i {
            // SAFETY: only inlined into kernels compiled with AVX-512 VNNI and VL.
            unsafe { _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy) }
        }
    }

    /// Weight rows are read once per token, straight from memory: ask for the bytes a few
    /// rows ahead so that the loads of the next rows do not stall. (2 KiB measured best for
    /// decoding SmolLM2 on AVX2: 4–23 % faster than 1 KiB in six alternating runs, 4 KiB
    /// no better.)
    #[inline(always)]
    fn prefetch_ahead<T>(block: &T) {
        const AHEAD: usize = 2048;
        let ptr = (block as *const T).cast::<i8>().wrapping_add(AHEAD);
        // SAFETY: a prefetch is a hint; it never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr) };
    }

    #[inline(always)]
    fn hsum(v: __m256) -> f32 {
        // SAFETY: only inlined into kernels compiled with AVX2.
        unsafe {
            let r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
            let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
            _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
        }
    }

    #[inline(always)]
    fn nibbles(qs: &[u8; 16]) -> __m256i {
        // SAFETY: `qs` is 16 readable bytes, the load unaligned; only inlined into kernels
        // compiled with AVX2.
        unsafe {
            let low = _mm_loadu_si128(qs.as_ptr().cast());
            let both = _mm256_set_m128i(_mm_srli_epi16(low, 4), low);
            _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
        }
    }

    #[inline(always)]
    fn load_act(y: &ActBlock) -> __m256i {
        // SAFETY: `qs` is 32 readable bytes; the load is unaligned.
        unsafe { _mm256_loadu_si256(y.qs.as_ptr().cast()) }
    }

    /// `d_x · d_y` in all eight lanes, from the weight scale already in all lanes.
    #[inline(always)]
    fn scale_by(d8: __m256, y: &ActBlock) -> __m256 {
        // SAFETY: only inlined into kernels compiled with AVX2; `y.d` is a readable f32.
        unsafe { _mm256_mul_ps(d8, _mm256_broadcast_ss(&y.d)) }
    }

    /// `R` consecutive rows of `nb` blocks from `all`, as slices of exactly `nb` blocks:
    /// indexing them by a block index then needs no bounds check in the inner loop.
    #[inline(always)]
    fn rows<T, const R: usize>(all: &[T], nb: usize) -> [&[T]; R] {
        std::array::from_fn(|r| &all[r * nb..(r + 1) * nb])
    }

    /// The activation side of a product: `n` rows of `nb` blocks, and for formats with a
    /// min the rows' scaled sums block-major (`sums[b * n + r]`), so that a tile's minimum
    /// terms for one block are one vector of consecutive values.
    struct Acts<'a> {
        blocks: &'a [ActBlock],
        sums: &'a [f32],
        nb: usize,
        n: usize,
    }

    /// A weight format's tile: the dot products of `X` weight rows with the `R` activation
    /// rows from `row`, written to `out[x * n + r]`.
    trait Tile: Sized {
        /// Whether the tile reads [`Acts::sums`].
        const NEEDS_SUMS: bool = false;

        fn tile<D: ByteDot, const X: usize, const R: usize>(
            w: &[Self],
            acts: &Acts<'_>,
            row: usize,
            out: &mut [f32],
        );
    }

    /// Blocks of unsigned values (as bytes) under a scale and a minimum, both f16.
    trait UnsignedBytes {
        /// The scale's bits in the low half, the minimum's in the high half.
        fn scale_and_min_bits(&self) -> u32;
        fn unsigned_values(&self) -> __m256i;
    }

    impl UnsignedBytes for BlockQ4_1 {
        #[inline(always)]
        fn scale_and_min_bits(&self) -> u32 {
            u32::from(self.d) | (u32::from(self.m) << 16)
        }
        #[inline(always)]
        fn unsigned_values(&self) -> __m256i {
            nibbles(&self.qs)
        }
    }

    impl UnsignedBytes for BlockQ5_1 {
        #[inline(always)]
        fn scale_and_min_bits(&self) -> u32 {
            u32::from(self.d) | (u32::from(self.m) << 16)
        }
        #[inline(always)]
        fn unsigned_values(&self) -> __m256i {
            // SAFETY: `qs` is 32 readable bytes; the load is unaligned.
            unsafe { _mm256_loadu_si256(self.qs.as_ptr().cast()) }
        }
    }

    /// The tile of the formats with minimums: ggml's `mul_sum_us8_pairs_float` (unsigned
    /// values by signed activations), and `summs += m * s`. (A macro rather than a blanket
    /// impl, which would overlap [`SignedBytes`]'.)
    macro_rules! unsigned_tile {
        ($block:ty) => {
            impl Tile for $block {
                const NEEDS_SUMS: bool = true;

                #[inline(always)]
                fn tile<D: ByteDot, const X: usize, const R: usize>(
                    w: &[Self],
                    acts: &Acts<'_>,
                    row: usize,
                    out: &mut [f32],
                ) {
                    let (nb, n) = (acts.nb, acts.n);
                    let wrows = rows::<Self, X>(w, nb);
                    let arows = rows::<ActBlock, R>(&acts.blocks[row * nb..], nb);
                    // SAFETY (every block below): only inlined into kernels compiled with AVX2.
                    let mut acc = [[unsafe { _mm256_setzero_ps() }; R]; X];
                    let mut mins = [[0f32; R]; X];
                    for b in 0..nb {
                        let sums: &[f32; R] =
                            acts.sums[b * n + row..][..R].try_into().expect("R sums");
                        for i in 0..X {
                            let xb = &wrows[i][b];
                            prefetch_ahead(xb);
                            // Both f16 fields in one conversion: lane 0 the scale, lane 1 the min.
                            let bits = xb.scale_and_min_bits();
                            let dm = unsafe { _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)) };
                            let d8 = unsafe { _mm256_broadcastss_ps(dm) };
                            let m = unsafe { _mm_cvtss_f32(_mm_movehdup_ps(dm)) };
                            // ggml's `summs += m * s`, a chain per row whose order must be kept; the
                            // rows' chains are independent, one vector operation for the tile.
                            for (min, &s) in mins[i].iter_mut().zip(sums) {
                                *min = m.mul_add(s, *min);
                            }
                            let qx = xb.unsigned_values();
                            for r in 0..R {
                                let yb = &arows[r][b];
                                let xy = unsafe { _mm256_cvtepi32_ps(D::dot(qx, load_act(yb))) };
                                acc[i][r] =
                                    unsafe { _mm256_fmadd_ps(scale_by(d8, yb), xy, acc[i][r]) };
                            }
                        }
                    }
                    for i in 0..X {
                        for r in 0..R {
                            out[i * n + r] = hsum(acc[i][r]) + mins[i][r];
                        }
                    }
                }
            }
        };
    }

    unsigned_tile!(BlockQ4_1);
    unsigned_tile!(BlockQ5_1);

    /// Blocks whose values unpack to 32 signed bytes under one scale.
    trait SignedBytes {
        fn scale_bits(&self) -> u16;
        fn signed_values(&self) -> __m256i;
    }

    impl SignedBytes for BlockQ4_0 {
        fn scale_bits(&self) -> u16 {
            self.d
        }
        #[inline(always)]
        fn signed_values(&self) -> __m256i {
            // SAFETY: only inlined into kernels compiled with AVX2.
            unsafe { _mm256_sub_epi8(nibbles(&self.qs), _mm256_set1_epi8(8)) }
        }
    }

    impl SignedBytes for BlockQ8_0 {
        fn scale_bits(&self) -> u16 {
            self.d
        }
        #[inline(always)]
        fn signed_values(&self) -> __m256i {
            // SAFETY: `qs` is 32 readable bytes; the load is unaligned.
            unsafe { _mm256_loadu_si256(self.qs.as_ptr().cast()) }
        }
    }

    /// The signed-times-signed tile: ggml's `mul_sum_i8_pairs_float`, which moves the
    /// weight's signs onto the activation so that the unsigned-by-signed product applies.
    impl<B: SignedBytes> Tile for B {
        #[inline(always)]
        fn tile<D: ByteDot, const X: usize, const R: usize>(
            w: &[B],
            acts: &Acts<'_>,
            row: usize,
            out: &mut [f32],
        ) {
            let (nb, n) = (acts.nb, acts.n);
            let wrows = rows::<B, X>(w, nb);
            let arows = rows::<ActBlock, R>(&acts.blocks[row * nb..], nb);
            // SAFETY (every block below): only inlined into kernels compiled with AVX2.
            let mut acc = [[unsafe { _mm256_setzero_ps() }; R]; X];
            for b in 0..nb {
                for i in 0..X {
                    let xb = &wrows[i][b];
                    prefetch_ahead(xb);
                    let d = unsafe { _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(xb.scale_bits()))) };
                    let d8 = unsafe { _mm256_broadcastss_ps(d) };
                    let qx = xb.signed_values();
                    let ax = unsafe { _mm256_sign_epi8(qx, qx) };
                    for r in 0..R {
                        let yb = &arows[r][b];
                        let sy = unsafe { _mm256_sign_epi8(load_act(yb), qx) };
                        let xy = unsafe { _mm256_cvtepi32_ps(D::dot(ax, sy)) };
                        acc[i][r] = unsafe { _mm256_fmadd_ps(scale_by(d8, yb), xy, acc[i][r]) };
                    }
                }
            }
            for i in 0..X {
                for r in 0..R {
                    out[i * n + r] = hsum(acc[i][r]);
                }
            }
        }
    }

    /// Covers the whole product with tiles: [`WEIGHT_TILE`] weight rows at a time for a
    /// single activation row, otherwise each weight row with [`TILE`] activation rows at a
    /// time, then two, then one. (Eight rows per tile with AVX-512's thirty-two registers
    /// measured no faster than four.)
    #[inline(always)]
    fn matrix<T: Tile, D: ByteDot>(w: &[T], nb: usize, blocks: &[ActBlock], out: &mut [f32]) {
        thread_local! {
            static SUMS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
        }
        let n = blocks.len() / nb;
        // Taken out and put back rather than used in a closure: a closure would be compiled
        // without this function's target features, and the intrinsics not inlined.
        let mut sums = SUMS.take();
        sums.clear();
        if T::NEEDS_SUMS {
            sums.resize(n * nb, 0.0);
            for (r, row) in blocks.chunks_exact(nb).enumerate() {
                for (b, block) in row.iter().enumerate() {
                    sums[b * n + r] = block.s;
                }
            }
        }
        let acts = Acts {
            blocks,
            sums: &sums,
            nb,
            n,
        };
        tiles::<T, D>(w, &acts, out);
        SUMS.set(sums);
    }

    #[inline(always)]
    fn tiles<T: Tile, D: ByteDot>(w: &[T], acts: &Acts<'_>, out: &mut [f32]) {
        let (nb, n) = (acts.nb, acts.n);
        let wr = w.len() / nb;
        let mut first = 0;
        if n == 1 {
            while first + WEIGHT_TILE <= wr {
                T::tile::<D, WEIGHT_TILE, 1>(&w[first * nb..], acts, 0, &mut out[first..]);
                first += WEIGHT_TILE;
            }
        }
        for i in first..wr {
            let row = &w[i * nb..(i + 1) * nb];
            let out = &mut out[i * n..(i + 1) * n];
            let mut r = 0;
            while r + TILE <= n {
                T::tile::<D, 1, TILE>(row, acts, r, &mut out[r..]);
                r += TILE;
            }
            while r + 2 <= n {
                T::tile::<D, 1, 2>(row, acts, r, &mut out[r..]);
                r += 2;
            }
            if r < n {
                T::tile::<D, 1, 1>(row, acts, r, &mut out[r..]);
            }
        }
    }

    macro_rules! simd_dot {
        ($block:ty) => {
            impl SimdDot for $block {
                unsafe fn matrix_avx2(x: &[Self], nb: usize, acts: &[ActBlock], out: &mut [f32]) {
                    #[target_feature(enable = "avx2,fma,f16c")]
                    fn run(x: &[$block], nb: usize, acts: &[ActBlock], out: &mut [f32]) {
                        matrix::<$block, Madd>(x, nb, acts, out);
                    }
                    // SAFETY: the caller guarantees the CPU features.
                    unsafe { run(x, nb, acts, out) }
                }

                unsafe fn matrix_vnni(x: &[Self], nb: usize, acts: &[ActBlock], out: &mut [f32]) {
                    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
                    fn run(x: &[$block], nb: usize, acts: &[ActBlock], out: &mut [f32]) {
                        matrix::<$block, Vnni>(x, nb, acts, out);
                    }
                    // SAFETY: the caller guarantees the CPU features.
                    unsafe { run(x, nb, acts, out) }
                }
            }
        };
    }

    simd_dot!(BlockQ4_0);
    simd_dot!(BlockQ4_1);
    simd_dot!(BlockQ5_1);
    simd_dot!(BlockQ8_0);
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
impl<W> SimdDot for W {}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::quant::ActFormat;
    use crate::test_support::{activations, scale};

    /// The vectorised kernels of every instruction set this CPU has must give the scalar
    /// reference's results bit for bit, for odd block counts and every tile remainder.
    fn check<W: WeightBlock + SimdDot>(make: impl Fn(&mut StdRng) -> W, format: ActFormat) {
        let mut rng = StdRng::seed_from_u64(7);
        for nb in [1, 2, 3, 18, 48] {
            // Weight row counts cover the interleaved weight tile and its remainder.
            for wrows in [1, 5, 8] {
                let weights: Vec<W> = (0..wrows * nb).map(|_| make(&mut rng)).collect();
                for rows in (1..=10).chain([13, 19]) {
                    let acts = activations(&mut rng, rows, nb, format);
                    for isa in Isa::supported() {
                        let mut fast = vec![0f32; wrows * rows];
                        dot_matrix_with(isa, &weights, nb, &acts, &mut fast);
                        for (i, (got, w)) in fast
                            .iter()
                            .zip(
                                weights
                                    .chunks_exact(nb)
                                    .flat_map(|w| std::iter::repeat_n(w, rows)),
                            )
                            .enumerate()
                        {
                            let r = i % rows;
                            let want = dot_scalar(w, &acts[r * nb..(r + 1) * nb]);
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{isa:?} nb {nb} weight rows {wrows} rows {rows} output {i}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn q4_0_matches_the_reference() {
        check(
            |rng| BlockQ4_0 {
                d: scale(rng),
                qs: rng.random(),
            },
            ActFormat::Q8_0,
        );
    }

    #[test]
    fn q4_1_matches_the_reference() {
        check(
            |rng| BlockQ4_1 {
                d: scale(rng),
                m: scale(rng),
                qs: rng.random(),
            },
            ActFormat::Q8_1,
        );
    }

    #[test]
    fn q5_1_matches_the_reference() {
        check(
            |rng| BlockQ5_1 {
                d: scale(rng),
                m: scale(rng),
                qs: std::array::from_fn(|_| rng.random_range(0u8..32)),
            },
            ActFormat::Q8_1,
        );
    }

    #[test]
    fn q8_0_matches_the_reference() {
        check(
            |rng| {
                let mut qs = [0i8; 32];
                qs.iter_mut()
                    .for_each(|q| *q = rng.random_range(-127i8..=127));
                BlockQ8_0 { d: scale(rng), qs }
            },
            ActFormat::Q8_0,
        );
    }

    #[test]
    fn reference_is_the_dequantised_dot_product() {
        let mut rng = StdRng::seed_from_u64(3);
        let block = BlockQ4_1 {
            d: scale(&mut rng),
            m: scale(&mut rng),
            qs: rng.random(),
        };
        let acts = activations(&mut rng, 1, 1, ActFormat::Q8_1);
        let mut w = [0f32; 32];
        block.dequantize(&mut w);
        let want: f32 = w
            .iter()
            .zip(&acts[0].qs)
            .map(|(&w, &q)| w * q as f32 * acts[0].d)
            .sum();
        let got = dot_scalar(&[block], &acts);
        assert!(
            (got - want).abs() < 1e-3 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
}

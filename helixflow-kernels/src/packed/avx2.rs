//! The packed kernels with AVX2, and with AVX-512 VNNI's `vpdpbusd` on 256-bit registers.
//!
//! Lane `l` of every vector is row `l` of the group. ggml's lane `j` of a block (the sum of
//! values `4j .. 4j + 4`) is one byte-dot instruction for all eight rows, against the four
//! activation bytes broadcast to every lane; its conversion and fused multiply-add then update
//! eight outputs' lane-`j` accumulators at once, and the final reduction adds the lanes in
//! ggml's tree order, vector by vector.

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::marker::PhantomData;

use super::private::Kernels;
use super::{Accumulation, PackedQ4_0, PackedQ4_1, PackedQ5_1, PackedQ8_0, ROWS};
use crate::quant::ActBlock;

/// Products of unsigned bytes with signed bytes, summed in fours into eight i32 lanes. Every
/// kernel's pairs of products stay within i16 (unsigned ≤ 128 and |signed| ≤ 127, or unsigned
/// ≤ 15), so `maddubs`'s saturation never applies and both implementations give the same sums.
trait ByteDot {
    /// Whether the registers hold several activation rows' accumulators (AVX-512's 32
    /// registers); AVX2's 16 hold one.
    const SEVERAL_ROWS: bool;
    /// Whether unsigned values up to 255 multiply without saturating, so that signed weights
    /// can be offset to unsigned ones, their offset's share taken back out, instead of moving
    /// their signs onto the activations (an instruction per product).
    const WIDE_UNSIGNED: bool;
    fn dot(u: __m256i, y: __m256i) -> __m256i;
    /// `acc` plus the sums.
    fn dot_acc(acc: __m256i, u: __m256i, y: __m256i) -> __m256i;
}

/// AVX2: `vpmaddubsw` into i16 pairs, then `vpmaddwd` with ones.
struct Madd;

impl ByteDot for Madd {
    const SEVERAL_ROWS: bool = false;
    const WIDE_UNSIGNED: bool = false;

    #[inline(always)]
    fn dot(u: __m256i, y: __m256i) -> __m256i {
        // SAFETY: only inlined into kernels compiled with AVX2.
        unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), _mm256_set1_epi16(1)) }
    }
    #[inline(always)]
    fn dot_acc(acc: __m256i, u: __m256i, y: __m256i) -> __m256i {
        // SAFETY: only inlined into kernels compiled with AVX2.
        unsafe { _mm256_add_epi32(acc, Self::dot(u, y)) }
    }
}

/// AVX-512 VNNI: `vpdpbusd`, one instruction.
struct Vnni;

impl ByteDot for Vnni {
    const SEVERAL_ROWS: bool = true;
    const WIDE_UNSIGNED: bool = true;

    #[inline(always)]
    fn dot(u: __m256i, y: __m256i) -> __m256i {
        // SAFETY: only inlined into kernels compiled with AVX-512 VNNI and VL.
        unsafe { _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, y) }
    }
    #[inline(always)]
    fn dot_acc(acc: __m256i, u: __m256i, y: __m256i) -> __m256i {
        // SAFETY: only inlined into kernels compiled with AVX-512 VNNI and VL.
        unsafe { _mm256_dpbusd_epi32(acc, u, y) }
    }
}

/// Activation bytes `4k .. 4k + 4` of `y` in every lane.
#[inline(always)]
fn broadcast_four(y: &ActBlock, k: usize) -> __m256i {
    let four: &[i8; 4] = y.qs[4 * k..4 * k + 4].try_into().expect("four bytes");
    // SAFETY: `four` is four readable bytes, read unaligned; only inlined into kernels
    // compiled with AVX2.
    unsafe { _mm256_set1_epi32(four.as_ptr().cast::<i32>().read_unaligned()) }
}

/// Eight f16 values widened.
#[inline(always)]
fn widen(h: &[u16; ROWS]) -> __m256 {
    // SAFETY: `h` is 16 readable bytes, the load unaligned; only inlined into kernels compiled
    // with F16C.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr().cast())) }
}

/// A packed block's side of the kernel.
trait Tile: Sized {
    /// Whether the values are signed (multiplied with ggml's sign trick) rather than the
    /// unsigned nibbles of `Q4_1`.
    const SIGNED: bool;
    /// Whether the format has minimums (`Σ m · s` terms).
    const HAS_MINS: bool = false;

    /// Whether the block is read from memory once per token, so worth prefetching ahead.
    const PREFETCH: bool = true;
    /// Whether a group is worth unpacking once for several tiles (see [`Unpacked`]).
    const UNPACK: bool = false;

    /// The eight rows' scales as f32.
    fn scale_vector(&self) -> __m256;
    /// The eight rows' minimums as f32.
    fn min_vector(&self) -> __m256 {
        unreachable!("only formats with HAS_MINS have minimums")
    }
    /// The magnitudes of lane values `x` (lanes `j` and `j + 4`), for the sign trick.
    #[inline(always)]
    fn magnitudes(&self, _j: usize, [low, high]: [__m256i; 2]) -> [__m256i; 2] {
        // SAFETY: only inlined into kernels compiled with AVX2.
        unsafe { [_mm256_sign_epi8(low, low), _mm256_sign_epi8(high, high)] }
    }
    /// The eight rows' values of ggml's lanes `j` and `j + 4` (`j` < 4), four bytes a row.
    fn lane_pair(&self, j: usize) -> [__m256i; 2];
    /// What the unsigned form of signed values exceeds them by (a power of two; 0 for
    /// unsigned formats).
    const OFFSET: i32 = 0;
    /// [`Self::lane_pair`] in unsigned form, plus [`Self::OFFSET`].
    fn unsigned_pair(&self, j: usize) -> [__m256i; 2] {
        self.lane_pair(j)
    }
}

/// Lanes `j` and `j + 4` of interleaved nibbles: the low and the high nibbles of bytes
/// `32j .. 32j + 32`.
#[inline(always)]
fn nibble_pair(qs: &[u8; 128], j: usize) -> [__m256i; 2] {
    let bytes: &[u8; 32] = qs[32 * j..32 * j + 32].try_into().expect("32 bytes");
    // SAFETY: `bytes` is 32 readable bytes, the load unaligned; only inlined into kernels
    // compiled with AVX2.
    unsafe {
        let bytes = _mm256_loadu_si256(bytes.as_ptr().cast());
        let mask = _mm256_set1_epi8(0x0f);
        [
            _mm256_and_si256(bytes, mask),
            _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask),
        ]
    }
}

impl Tile for PackedQ4_0 {
    const SIGNED: bool = true;
    const OFFSET: i32 = 8;
    // Its tiles spend the most on unpacking: nibbles, their offset, then the magnitudes.
    const UNPACK: bool = true;

    #[inline(always)]
    fn unsigned_pair(&self, j: usize) -> [__m256i; 2] {
        nibble_pair(&self.qs, j)
    }

    #[inline(always)]
    fn scale_vector(&self) -> __m256 {
        widen(&self.d)
    }
    #[inline(always)]
    fn lane_pair(&self, j: usize) -> [__m256i; 2] {
        let [low, high] = nibble_pair(&self.qs, j);
        // SAFETY: only inlined into kernels compiled with AVX2. (No closures here: they would
        // be compiled without the kernel's target features, and the intrinsics not inlined.)
        unsafe {
            let eight = _mm256_set1_epi8(8);
            [_mm256_sub_epi8(low, eight), _mm256_sub_epi8(high, eight)]
        }
    }
}

impl Tile for PackedQ4_1 {
    const SIGNED: bool = false;
    const HAS_MINS: bool = true;

    #[inline(always)]
    fn scale_vector(&self) -> __m256 {
        widen(&self.d)
    }
    #[inline(always)]
    fn min_vector(&self) -> __m256 {
        widen(&self.m)
    }
    #[inline(always)]
    fn lane_pair(&self, j: usize) -> [__m256i; 2] {
        nibble_pair(&self.qs, j)
    }
}

impl Tile for PackedQ5_1 {
    const SIGNED: bool = false;
    const HAS_MINS: bool = true;

    #[inline(always)]
    fn scale_vector(&self) -> __m256 {
        widen(&self.d)
    }
    #[inline(always)]
    fn min_vector(&self) -> __m256 {
        widen(&self.m)
    }
    #[inline(always)]
    fn lane_pair(&self, j: usize) -> [__m256i; 2] {
        interleaved_pair(&self.qs, j)
    }
}

/// Lanes `j` and `j + 4` of values interleaved four bytes at a time: bytes `32j .. 32j + 32`
/// and `32(j + 4) .. 32(j + 4) + 32`.
#[inline(always)]
fn interleaved_pair<T>(qs: &[T; 32 * ROWS], j: usize) -> [__m256i; 2] {
    const { assert!(size_of::<T>() == 1) };
    // SAFETY: `qs` holds eight 32-byte loads, unaligned; only inlined into kernels compiled
    // with AVX2.
    unsafe {
        [
            _mm256_loadu_si256(qs.as_ptr().add(32 * j).cast()),
            _mm256_loadu_si256(qs.as_ptr().add(32 * (j + 4)).cast()),
        ]
    }
}

impl Tile for PackedQ8_0 {
    const SIGNED: bool = true;
    const OFFSET: i32 = 128;

    #[inline(always)]
    fn unsigned_pair(&self, j: usize) -> [__m256i; 2] {
        let [low, high] = self.lane_pair(j);
        // SAFETY: only inlined into kernels compiled with AVX2.
        unsafe {
            let flip = _mm256_set1_epi8(-128);
            [_mm256_xor_si256(low, flip), _mm256_xor_si256(high, flip)]
        }
    }

    #[inline(always)]
    fn scale_vector(&self) -> __m256 {
        widen(&self.d)
    }
    #[inline(always)]
    fn lane_pair(&self, j: usize) -> [__m256i; 2] {
        interleaved_pair(&self.qs, j)
    }
}

/// A packed block unpacked for the tiles after a group's first: its lanes' values as bytes
/// (signed formats' with their magnitudes, for the sign trick), its scales and minimums
/// widened. Without AVX-512's registers a batch of activation rows takes several tiles per
/// group, and each would otherwise unpack the nibbles, take off their offset and take their
/// magnitudes again. Unpacked, a group stays in L1 (576 bytes a block) while its tiles run:
/// `Q4_0` at 16 rows gains 5 % in ggml's order and 22 % in block order; `Q4_1` and `Q8_0`,
/// whose tiles are bound by the multiply ports rather than by unpacking, lose and stay packed.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Unpacked {
    lanes: [__m256i; 8],
    magnitudes: [__m256i; 8],
    scales: __m256,
    mins: __m256,
}

/// [`Unpacked`] blocks of format `P`, which give the tiles `P`'s constants.
#[repr(transparent)]
struct UnpackedOf<P>(Unpacked, PhantomData<P>);

impl<P: Tile> Tile for UnpackedOf<P> {
    const SIGNED: bool = P::SIGNED;
    const HAS_MINS: bool = P::HAS_MINS;
    const PREFETCH: bool = false;

    #[inline(always)]
    fn scale_vector(&self) -> __m256 {
        self.0.scales
    }
    #[inline(always)]
    fn min_vector(&self) -> __m256 {
        self.0.mins
    }
    #[inline(always)]
    fn lane_pair(&self, j: usize) -> [__m256i; 2] {
        [self.0.lanes[j], self.0.lanes[j + 4]]
    }
    #[inline(always)]
    fn magnitudes(&self, j: usize, _: [__m256i; 2]) -> [__m256i; 2] {
        [self.0.magnitudes[j], self.0.magnitudes[j + 4]]
    }
}

/// `group` unpacked into `into` (resized to it), prefetching the blocks ahead as a tile
/// would.
#[inline(always)]
fn unpack_group<P: Tile>(group: &[P], into: &mut Vec<Unpacked>) {
    // SAFETY: only inlined into kernels compiled with AVX2 and F16C.
    let (zero, zero_ps) = unsafe { (_mm256_setzero_si256(), _mm256_setzero_ps()) };
    into.clear();
    let ahead = prefetch_distance::<P>(true, 0, group.len());
    for block in group {
        prefetch_ahead(block, ahead);
        let mut unpacked = Unpacked {
            lanes: [zero; 8],
            magnitudes: [zero; 8],
            scales: block.scale_vector(),
            mins: if P::HAS_MINS {
                block.min_vector()
            } else {
                zero_ps
            },
        };
        for j in 0..4 {
            let pair = block.lane_pair(j);
            [unpacked.lanes[j], unpacked.lanes[j + 4]] = pair;
            if P::SIGNED {
                [unpacked.magnitudes[j], unpacked.magnitudes[j + 4]] = block.magnitudes(j, pair);
            }
        }
        into.push(unpacked);
    }
}

/// `unpacked` as blocks of format `P`.
fn unpacked_of<P>(unpacked: &[Unpacked]) -> &[UnpackedOf<P>] {
    // SAFETY: `UnpackedOf<P>` is a transparent wrapper of `Unpacked`.
    unsafe { std::slice::from_raw_parts(unpacked.as_ptr().cast(), unpacked.len()) }
}

/// How far ahead a tile prefetches weights, in bytes: weights are read once per token,
/// straight from memory.
///
/// A group with one tile asks for the blocks 2 KiB ahead (the distance of the row-at-a-time
/// kernels). A group with several tiles asks, in its first tile only, for the next group's
/// blocks: each line once, and a whole group's tiles ahead (measured 5 % faster over a
/// 47 MB matrix on two threads than every tile asking 2 KiB ahead); its other tiles read the
/// group from L1.
#[inline(always)]
fn prefetch_distance<P>(several_tiles: bool, row: usize, nb: usize) -> usize {
    match (several_tiles, row) {
        (false, _) => 2048,
        (true, 0) => nb * std::mem::size_of::<P>(),
        (true, _) => 0,
    }
}

/// Prefetches `block`'s bytes `ahead` bytes on (none if 0).
#[inline(always)]
fn prefetch_ahead<T>(block: &T, ahead: usize) {
    if ahead == 0 {
        return;
    }
    let at = (block as *const T).cast::<i8>().wrapping_add(ahead);
    for line in (0..std::mem::size_of::<T>()).step_by(64) {
        // SAFETY: a prefetch is a hint; it never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(line)) };
    }
}

/// One group (`nb` packed blocks) times the `R` activation rows from `row`, written to
/// `out[(row + r) * ld .. + 8]`.
#[inline(always)]
fn tile<P: Tile, D: ByteDot, const R: usize>(
    group: &[P],
    acts: &[ActBlock],
    shares: &[[i32; 8]],
    (row, ahead): (usize, usize),
    out: &mut [f32],
    ld: usize,
) {
    let nb = group.len();
    let mut arows: [&[ActBlock]; R] = [&[]; R];
    for (r, a) in arows.iter_mut().enumerate() {
        *a = &acts[(row + r) * nb..][..nb];
    }
    // SAFETY (every block below): only inlined into kernels compiled with AVX2, FMA and F16C.
    let zero = unsafe { _mm256_setzero_ps() };
    // acc[r][j]: ggml's lane j of the eight rows' products with activation row r.
    let mut acc = [[zero; 8]; R];
    if D::SEVERAL_ROWS || R == 1 {
        lanes::<P, D, R, BOTH>(group, &arows, shares, (row, ahead), &mut acc);
    } else {
        // AVX2's sixteen registers hold the accumulators of all lanes of one row, or of half
        // the lanes of two: one pass over the group (in L1 after the first) for each half.
        lanes::<P, D, R, LOW>(group, &arows, shares, (row, ahead), &mut acc);
        lanes::<P, D, R, HIGH>(group, &arows, shares, (row, ahead), &mut acc);
    }
    // Σ m · s: a second pass over the group (still in L1), its own chain per row as in ggml,
    // without holding more registers in the first pass.
    let mut mins = [zero; R];
    if P::HAS_MINS {
        for (b, block) in group.iter().enumerate() {
            let m = block.min_vector();
            for r in 0..R {
                let s = unsafe { _mm256_set1_ps(arows[r][b].s) };
                mins[r] = unsafe { _mm256_fmadd_ps(m, s, mins[r]) };
            }
        }
    }
    for r in 0..R {
        let a = &acc[r];
        // `hsum8`'s order: high half plus low half, the pairs two apart, the last two.
        let sum = unsafe {
            let (q0, q1) = (_mm256_add_ps(a[4], a[0]), _mm256_add_ps(a[5], a[1]));
            let (q2, q3) = (_mm256_add_ps(a[6], a[2]), _mm256_add_ps(a[7], a[3]));
            _mm256_add_ps(_mm256_add_ps(q0, q2), _mm256_add_ps(q1, q3))
        };
        let o = &mut out[(row + r) * ld..][..ROWS];
        // SAFETY: `o` is eight writable f32; the store is unaligned.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), _mm256_add_ps(sum, mins[r])) };
    }
}

/// Which of ggml's lanes a pass over a group computes: `LOW` (0..4), `HIGH` (4..8) or `BOTH`.
const LOW: u8 = 1;
const HIGH: u8 = 2;
const BOTH: u8 = LOW | HIGH;

/// The integer sums, conversions and multiply-adds of the lanes in `HALVES` for every block of
/// the group, into `acc`.
#[inline(always)]
fn lanes<P: Tile, D: ByteDot, const R: usize, const HALVES: u8>(
    group: &[P],
    arows: &[&[ActBlock]; R],
    shares: &[[i32; 8]],
    (row, ahead): (usize, usize),
    acc: &mut [[__m256; 8]; R],
) {
    let nb = group.len();
    // SAFETY (every block below): only inlined into kernels compiled with AVX2, FMA and F16C.
    let zero = unsafe { _mm256_setzero_ps() };
    for (b, block) in group.iter().enumerate() {
        if P::PREFETCH && HALVES & LOW != 0 {
            prefetch_ahead(block, ahead);
        }
        let mut ys: [&ActBlock; R] = [&arows[0][b]; R];
        let mut scale = [zero; R];
        let d = block.scale_vector();
        for r in 0..R {
            ys[r] = &arows[r][b];
            scale[r] = unsafe { _mm256_mul_ps(d, _mm256_set1_ps(ys[r].d)) };
        }
        let mut share: [&[i32; 8]; R] = [&[0; 8]; R];
        if offsets::<P, D>() {
            for (r, s) in share.iter_mut().enumerate() {
                *s = &shares[(row + r) * nb + b];
            }
        }
        let at = (&ys, &scale, &share);
        // Written out lane by lane, so that every accumulator index is a constant and the
        // accumulators stay in registers.
        lane_pair::<P, D, R, 0, HALVES>(block, at, acc);
        lane_pair::<P, D, R, 1, HALVES>(block, at, acc);
        lane_pair::<P, D, R, 2, HALVES>(block, at, acc);
        lane_pair::<P, D, R, 3, HALVES>(block, at, acc);
    }
}

/// ggml's lanes `J` and `J + 4` of one block for the `R` activation rows (those of them in
/// `HALVES`): integer sums,
/// conversion, and a fused multiply-add into each row's accumulators.
#[inline(always)]
fn lane_pair<P: Tile, D: ByteDot, const R: usize, const J: usize, const HALVES: u8>(
    block: &P,
    at: BlockRows<'_, R>,
    acc: &mut [[__m256; 8]; R],
) {
    let [low, high] = if offsets::<P, D>() {
        block.unsigned_pair(J)
    } else {
        block.lane_pair(J)
    };
    let [abs_low, abs_high] = if signs::<P, D>() {
        block.magnitudes(J, [low, high])
    } else {
        [low, high]
    };
    if HALVES & LOW != 0 {
        lane::<P, D, R>([low, abs_low], J, at, acc);
    }
    if HALVES & HIGH != 0 {
        lane::<P, D, R>([high, abs_high], J + 4, at, acc);
    }
}

/// One block's activation rows, their scale products with the weight scales, and with offset
/// weights the rows' offset shares.
type BlockRows<'a, const R: usize> = (
    &'a [&'a ActBlock; R],
    &'a [__m256; R],
    &'a [&'a [i32; 8]; R],
);

/// Whether format `P` multiplies its unsigned form with `D`, taking the offset's share back
/// out, rather than moving its signs onto the activations.
#[inline(always)]
fn offsets<P: Tile, D: ByteDot>() -> bool {
    P::OFFSET != 0 && D::WIDE_UNSIGNED
}

/// `-offset` times the sum of each of `y`'s eight groups of four bytes: the offset's share of
/// each of ggml's lanes.
#[inline(always)]
fn offset_shares<D: ByteDot>(y: &ActBlock, offset: i32) -> [i32; 8] {
    let mut shares = [0i32; 8];
    // SAFETY: `y.qs` is 32 readable bytes and `shares` 32 writable ones, both unaligned; only
    // inlined into kernels compiled with AVX2.
    unsafe {
        let sums = D::dot(
            _mm256_set1_epi8(1),
            _mm256_loadu_si256(y.qs.as_ptr().cast()),
        );
        let scaled = _mm256_mullo_epi32(sums, _mm256_set1_epi32(-offset));
        _mm256_storeu_si256(shares.as_mut_ptr().cast(), scaled);
    }
    shares
}

/// Whether format `P` multiplies with the sign trick under `D`: magnitudes of the weights
/// against activations carrying the weights' signs.
#[inline(always)]
fn signs<P: Tile, D: ByteDot>() -> bool {
    P::SIGNED && !offsets::<P, D>()
}

/// Lane `lane` of one block, from the eight rows' values `x` of that lane and (with the sign
/// trick) their magnitudes `ax`.
#[inline(always)]
fn lane<P: Tile, D: ByteDot, const R: usize>(
    [x, ax]: [__m256i; 2],
    lane: usize,
    (ys, scale, share): BlockRows<'_, R>,
    acc: &mut [[__m256; 8]; R],
) {
    // SAFETY (every block below): only inlined into kernels compiled with AVX2 and FMA.
    let signs = signs::<P, D>();
    for r in 0..R {
        let mut y = broadcast_four(ys[r], lane);
        if signs {
            y = unsafe { _mm256_sign_epi8(y, x) };
        }
        let sums = if offsets::<P, D>() {
            let start = unsafe { _mm256_set1_epi32(share[r][lane]) };
            D::dot_acc(start, ax, y)
        } else {
            D::dot(ax, y)
        };
        let xy = unsafe { _mm256_cvtepi32_ps(sums) };
        acc[r][lane] = unsafe { _mm256_fmadd_ps(scale[r], xy, acc[r][lane]) };
    }
}

/// [`tile`] in block order ([`Accumulation::Blocks`]): each block's integer sum of all
/// 32 products, then one conversion and one multiply-add per block, for `R` activation rows.
#[inline(always)]
fn tile_blocks<P: Tile, D: ByteDot, const R: usize>(
    group: &[P],
    acts: &[ActBlock],
    block_shares: &[i32],
    (row, ahead): (usize, usize),
    out: &mut [f32],
    ld: usize,
) {
    let nb = group.len();
    let mut arows: [&[ActBlock]; R] = [&[]; R];
    for (r, a) in arows.iter_mut().enumerate() {
        *a = &acts[(row + r) * nb..][..nb];
    }
    let signs = signs::<P, D>();
    // SAFETY (every block below): only inlined into kernels compiled with AVX2, FMA and F16C.
    let zero = unsafe { _mm256_setzero_ps() };
    let mut acc = [zero; R];
    let mut mins = [zero; R];
    for (b, block) in group.iter().enumerate() {
        if P::PREFETCH {
            prefetch_ahead(block, ahead);
        }
        let mut sums = [unsafe { _mm256_setzero_si256() }; R];
        if offsets::<P, D>() {
            for (r, sum) in sums.iter_mut().enumerate() {
                *sum = unsafe { _mm256_set1_epi32(block_shares[(row + r) * nb + b]) };
            }
        }
        for j in 0..4 {
            let [low, high] = if offsets::<P, D>() {
                block.unsigned_pair(j)
            } else {
                block.lane_pair(j)
            };
            let [abs_low, abs_high] = if signs {
                block.magnitudes(j, [low, high])
            } else {
                [low, high]
            };
            for (x, ax, lane) in [(low, abs_low, j), (high, abs_high, j + 4)] {
                for r in 0..R {
                    let mut y = broadcast_four(&arows[r][b], lane);
                    if signs {
                        y = unsafe { _mm256_sign_epi8(y, x) };
                    }
                    sums[r] = D::dot_acc(sums[r], ax, y);
                }
            }
        }
        let d = block.scale_vector();
        for r in 0..R {
            let y = &arows[r][b];
            unsafe {
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(y.d));
                acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums[r]), acc[r]);
            }
        }
        if P::HAS_MINS {
            let m = block.min_vector();
            for r in 0..R {
                let s = unsafe { _mm256_set1_ps(arows[r][b].s) };
                mins[r] = unsafe { _mm256_fmadd_ps(m, s, mins[r]) };
            }
        }
    }
    for r in 0..R {
        let o = &mut out[(row + r) * ld..][..ROWS];
        // SAFETY: `o` is eight writable f32; the store is unaligned.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), _mm256_add_ps(acc[r], mins[r])) };
    }
}

/// [`matrix`] in block order: four activation rows at a time (two with AVX2's sign trick),
/// then fewer.
#[inline(always)]
fn matrix_blocks<P: Tile, D: ByteDot>(
    w: &[P],
    nb: usize,
    acts: &[ActBlock],
    out: &mut [f32],
    ld: usize,
) {
    thread_local! {
        static SHARES: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
    }
    let mut shares = SHARES.take();
    shares.clear();
    if offsets::<P, D>() {
        shares.extend(
            acts.iter()
                .map(|y| -P::OFFSET * y.qs.iter().map(|&q| i32::from(q)).sum::<i32>()),
        );
    }
    groups::<P, D, BlockTiles>(w, nb, acts, &shares, out, ld);
    SHARES.set(shares);
}

/// One group times every activation row in block order: four activation rows at a time (two
/// with AVX2's sign trick), then fewer.
#[inline(always)]
fn tiles_blocks<P: Tile, D: ByteDot>(
    group: &[P],
    acts: &[ActBlock],
    shares: &[i32],
    out: &mut [f32],
    ld: usize,
) {
    let (n, nb) = (acts.len() / group.len(), group.len());
    let mut r = 0;
    // The sign trick holds each lane's weights twice (as they are and their magnitudes),
    // which leaves AVX2's sixteen registers too few for four rows (measured: Q8_0 45 against
    // 55 GMAC/s with two).
    let four_fit = D::SEVERAL_ROWS || !P::SIGNED || offsets::<P, D>();
    let several = n > if four_fit { 4 } else { 2 };
    let at = |r| (r, prefetch_distance::<P>(several, r, nb));
    while four_fit && r + 4 <= n {
        tile_blocks::<P, D, 4>(group, acts, shares, at(r), out, ld);
        r += 4;
    }
    while r + 2 <= n {
        tile_blocks::<P, D, 2>(group, acts, shares, at(r), out, ld);
        r += 2;
    }
    while r < n {
        tile_blocks::<P, D, 1>(group, acts, shares, at(r), out, ld);
        r += 1;
    }
}

/// Every group times every activation row.
#[inline(always)]
fn matrix<P: Tile, D: ByteDot>(w: &[P], nb: usize, acts: &[ActBlock], out: &mut [f32], ld: usize) {
    thread_local! {
        static SHARES: RefCell<Vec<[i32; 8]>> = const { RefCell::new(Vec::new()) };
    }
    // Taken out and put back rather than used in a closure: a closure would be compiled
    // without this function's target features, and the intrinsics not inlined.
    let mut shares = SHARES.take();
    shares.clear();
    if offsets::<P, D>() {
        shares.reserve(acts.len());
        for y in acts {
            shares.push(offset_shares::<D>(y, P::OFFSET));
        }
    }
    groups::<P, D, GgmlTiles>(w, nb, acts, &shares, out, ld);
    SHARES.set(shares);
}

/// The tiles of one group in one accumulation order, with that order's offset shares.
trait GroupTiles<D: ByteDot> {
    /// Each activation block's offset share (per lane, or per block).
    type Share;
    fn run<P: Tile>(
        group: &[P],
        acts: &[ActBlock],
        shares: &[Self::Share],
        out: &mut [f32],
        ld: usize,
    );
}

/// ggml's order: [`tiles`].
struct GgmlTiles;

impl<D: ByteDot> GroupTiles<D> for GgmlTiles {
    type Share = [i32; 8];
    #[inline(always)]
    fn run<P: Tile>(
        group: &[P],
        acts: &[ActBlock],
        shares: &[[i32; 8]],
        out: &mut [f32],
        ld: usize,
    ) {
        tiles::<P, D>(group, acts, shares, out, ld);
    }
}

/// Block order: [`tiles_blocks`].
struct BlockTiles;

impl<D: ByteDot> GroupTiles<D> for BlockTiles {
    type Share = i32;
    #[inline(always)]
    fn run<P: Tile>(group: &[P], acts: &[ActBlock], shares: &[i32], out: &mut [f32], ld: usize) {
        tiles_blocks::<P, D>(group, acts, shares, out, ld);
    }
}

/// Every group of `w` times every activation row, in the order of `T`. With several tiles
/// per group and no offsets, a format that pays for it is unpacked once per group (see
/// [`Unpacked`]).
#[inline(always)]
fn groups<P: Tile, D: ByteDot, T: GroupTiles<D>>(
    w: &[P],
    nb: usize,
    acts: &[ActBlock],
    shares: &[T::Share],
    out: &mut [f32],
    ld: usize,
) {
    let unpack = P::UNPACK && !offsets::<P, D>() && acts.len() / nb > 2;
    let mut unpacked = UNPACKED.take();
    for (g, group) in w.chunks_exact(nb).enumerate() {
        let out = &mut out[g * ROWS..];
        if unpack {
            unpack_group(group, &mut unpacked);
            T::run(unpacked_of::<P>(&unpacked), acts, shares, out, ld);
        } else {
            T::run(group, acts, shares, out, ld);
        }
    }
    UNPACKED.set(unpacked);
}

/// One group times every activation row: three rows at a time where the registers hold them
/// (measured 2–3 % faster than two), then two, then one.
#[inline(always)]
fn tiles<P: Tile, D: ByteDot>(
    group: &[P],
    acts: &[ActBlock],
    shares: &[[i32; 8]],
    out: &mut [f32],
    ld: usize,
) {
    let (n, nb) = (acts.len() / group.len(), group.len());
    let mut r = 0;
    let several = n > if D::SEVERAL_ROWS { 3 } else { 2 };
    let at = |r| (r, prefetch_distance::<P>(several, r, nb));
    if D::SEVERAL_ROWS {
        while r + 3 <= n {
            tile::<P, D, 3>(group, acts, shares, at(r), out, ld);
            r += 3;
        }
    }
    while r + 2 <= n {
        tile::<P, D, 2>(group, acts, shares, at(r), out, ld);
        r += 2;
    }
    while r < n {
        tile::<P, D, 1>(group, acts, shares, at(r), out, ld);
        r += 1;
    }
}

thread_local! {
    /// A group's [`Unpacked`] blocks, kept between calls.
    static UNPACKED: RefCell<Vec<Unpacked>> = const { RefCell::new(Vec::new()) };
}

/// One entry point of a packed format's kernels: `$name` runs [`matrix`] or [`matrix_blocks`]
/// with byte dot `$dot`, compiled for `$features`.
macro_rules! entry_point {
    ($packed:ty, $name:ident, $dot:ty, $features:literal) => {
        unsafe fn $name(
            order: Accumulation,
            w: &[Self],
            nb: usize,
            acts: &[ActBlock],
            out: &mut [f32],
            ld: usize,
        ) {
            #[target_feature(enable = $features)]
            fn run(
                order: Accumulation,
                w: &[$packed],
                nb: usize,
                acts: &[ActBlock],
                out: &mut [f32],
                ld: usize,
            ) {
                match order {
                    Accumulation::Ggml => matrix::<$packed, $dot>(w, nb, acts, out, ld),
                    Accumulation::Blocks => matrix_blocks::<$packed, $dot>(w, nb, acts, out, ld),
                }
            }
            // SAFETY: the caller guarantees the CPU features.
            unsafe { run(order, w, nb, acts, out, ld) }
        }
    };
}

macro_rules! kernels {
    ($packed:ty) => {
        impl Kernels for $packed {
            entry_point!($packed, matrix_avx2, Madd, "avx2,fma,f16c");
            entry_point!(
                $packed,
                matrix_vnni,
                Vnni,
                "avx2,fma,f16c,avx512f,avx512vl,avx512vnni"
            );
        }
    };
}

kernels!(PackedQ4_0);
kernels!(PackedQ4_1);
kernels!(PackedQ5_1);
kernels!(PackedQ8_0);

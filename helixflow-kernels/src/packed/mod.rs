//! Weight rows packed eight at a time, for matrix products that work on eight outputs per
//! vector operation.
//!
//! The GGUF layout keeps each row's blocks together, so a vector kernel over it computes one
//! output at a time: per block, a byte-dot instruction, a conversion, a scale multiply and a
//! fused multiply-add into eight lanes that are reduced at the end of the row. Here block `b` of
//! eight consecutive rows is stored as one [`PackedFormat`] block, its values interleaved so
//! that 32 bytes hold four values of each of the eight rows. One byte-dot instruction against
//! four activation values broadcast to every lane then gives all eight rows' sums for one of
//! ggml's lanes, and one conversion and one fused multiply-add update that lane of eight
//! outputs: the same arithmetic per output, lane for lane, with the scale products, the weight
//! unpacking and the minimum terms shared by eight rows, and the results already in the order
//! the next layer reads.
//!
//! The float order is ggml's (each output is [`crate::dot::dot_scalar`] of its row), so packed
//! and row-at-a-time products are bit-identical and greedy decoding still reproduces
//! llama.cpp. Rows beyond the last whole group of eight are padded with zero blocks, whose
//! outputs callers drop.

#[cfg(target_arch = "x86_64")]
mod avx2;

use crate::dot::{dot_blocks, dot_scalar, Isa, WeightBlock};
use crate::format::QuantFormat;
use crate::quant::{ActBlock, BlockQ4_0, BlockQ4_1, BlockQ5_1, BlockQ8_0, BLOCK};

/// Weight rows per packed block.
pub const ROWS: usize = 8;

/// Block `b` of eight `Q4_0` rows: their scales, then their nibbles interleaved four bytes at a
/// time (bytes `32j + 4l .. 32j + 4l + 4` are row `l`'s `qs[4j .. 4j + 4]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct PackedQ4_0 {
    /// Each row's scale, f16 bits.
    pub d: [u16; ROWS],
    /// The rows' nibbles, interleaved.
    pub qs: [u8; 16 * ROWS],
}

/// Block `b` of eight `Q4_1` rows: scales, minimums, then nibbles interleaved as in
/// [`PackedQ4_0`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct PackedQ4_1 {
    /// Each row's scale, f16 bits.
    pub d: [u16; ROWS],
    /// Each row's minimum, f16 bits.
    pub m: [u16; ROWS],
    /// The rows' nibbles, interleaved.
    pub qs: [u8; 16 * ROWS],
}

/// Block `b` of eight `Q5_1` rows: scales, minimums, then values (bytes, 0..32) interleaved as
/// in [`PackedQ8_0`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct PackedQ5_1 {
    /// Each row's scale, f16 bits.
    pub d: [u16; ROWS],
    /// Each row's minimum, f16 bits.
    pub m: [u16; ROWS],
    /// The rows' values, interleaved.
    pub qs: [u8; 32 * ROWS],
}

/// Block `b` of eight `Q8_0` rows: scales, then values interleaved four at a time (bytes
/// `32k + 4l .. 32k + 4l + 4` are row `l`'s values `4k .. 4k + 4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct PackedQ8_0 {
    /// Each row's scale, f16 bits.
    pub d: [u16; ROWS],
    /// The rows' values, interleaved.
    pub qs: [i8; 32 * ROWS],
}

/// A packed format: eight rows' block `b` of a GGUF block format, and the kernels over it.
pub trait PackedFormat: Copy + Send + Sync + 'static + private::Kernels {
    /// The GGUF block format packed.
    type Block: WeightBlock + QuantFormat<Act = ActBlock>;

    /// Packs block `b` of eight rows; a missing row (padding) is a zero block.
    fn pack(rows: [Option<&Self::Block>; ROWS]) -> Self;

    /// Row `row`'s block, as stored in the GGUF file.
    fn unpack(&self, row: usize) -> Self::Block;
}

/// The interleaving of nibble blocks: row `l`'s `qs[4j + t]` goes to byte `32j + 4l + t`.
fn interleave<const BYTES: usize, const OUT: usize>(rows: [&[u8; BYTES]; ROWS]) -> [u8; OUT] {
    let mut out = [0u8; OUT];
    for (l, qs) in rows.iter().enumerate() {
        for (j, four) in qs.chunks_exact(4).enumerate() {
            out[32 * j + 4 * l..][..4].copy_from_slice(four);
        }
    }
    out
}

/// The inverse of [`interleave`] for row `l`.
fn deinterleave<const BYTES: usize, const IN: usize>(qs: &[u8; IN], l: usize) -> [u8; BYTES] {
    let mut out = [0u8; BYTES];
    for (j, four) in out.chunks_exact_mut(4).enumerate() {
        four.copy_from_slice(&qs[32 * j + 4 * l..][..4]);
    }
    out
}

impl PackedFormat for PackedQ4_0 {
    type Block = BlockQ4_0;

    fn pack(rows: [Option<&BlockQ4_0>; ROWS]) -> Self {
        const ZERO: BlockQ4_0 = BlockQ4_0 { d: 0, qs: [0; 16] };
        let rows = rows.map(|r| r.unwrap_or(&ZERO));
        Self {
            d: rows.map(|r| r.d),
            qs: interleave(rows.map(|r| &r.qs)),
        }
    }

    fn unpack(&self, row: usize) -> BlockQ4_0 {
        BlockQ4_0 {
            d: self.d[row],
            qs: deinterleave(&self.qs, row),
        }
    }
}

impl PackedFormat for PackedQ4_1 {
    type Block = BlockQ4_1;

    fn pack(rows: [Option<&BlockQ4_1>; ROWS]) -> Self {
        const ZERO: BlockQ4_1 = BlockQ4_1 {
            d: 0,
            m: 0,
            qs: [0; 16],
        };
        let rows = rows.map(|r| r.unwrap_or(&ZERO));
        Self {
            d: rows.map(|r| r.d),
            m: rows.map(|r| r.m),
            qs: interleave(rows.map(|r| &r.qs)),
        }
    }

    fn unpack(&self, row: usize) -> BlockQ4_1 {
        BlockQ4_1 {
            d: self.d[row],
            m: self.m[row],
            qs: deinterleave(&self.qs, row),
        }
    }
}

impl PackedFormat for PackedQ5_1 {
    type Block = BlockQ5_1;

    fn pack(rows: [Option<&BlockQ5_1>; ROWS]) -> Self {
        const ZERO: BlockQ5_1 = BlockQ5_1 {
            d: 0,
            m: 0,
            qs: [0; 32],
        };
        let rows = rows.map(|r| r.unwrap_or(&ZERO));
        Self {
            d: rows.map(|r| r.d),
            m: rows.map(|r| r.m),
            qs: interleave(rows.map(|r| &r.qs)),
        }
    }

    fn unpack(&self, row: usize) -> BlockQ5_1 {
        BlockQ5_1 {
            d: self.d[row],
            m: self.m[row],
            qs: deinterleave(&self.qs, row),
        }
    }
}

impl PackedFormat for PackedQ8_0 {
    type Block = BlockQ8_0;

    fn pack(rows: [Option<&BlockQ8_0>; ROWS]) -> Self {
        const ZERO: BlockQ8_0 = BlockQ8_0 { d: 0, qs: [0; 32] };
        let rows = rows.map(|r| r.unwrap_or(&ZERO));
        let bytes = interleave::<32, 256>(rows.map(|r| {
            // SAFETY: i8 and u8 have the same size and alignment.
            unsafe { &*(&r.qs as *const [i8; 32]).cast::<[u8; 32]>() }
        }));
        Self {
            d: rows.map(|r| r.d),
            qs: bytes.map(|b| b as i8),
        }
    }

    fn unpack(&self, row: usize) -> BlockQ8_0 {
        let bytes = self.qs.map(|q| q as u8);
        BlockQ8_0 {
            d: self.d[row],
            qs: deinterleave::<32, 256>(&bytes, row).map(|b| b as i8),
        }
    }
}

/// Packs a matrix of `rows` rows of `nb` blocks (GGUF order) into groups of eight rows,
/// group-major: `out[g * nb + b]` is block `b` of rows `8g .. 8g + 8`.
pub fn pack<P: PackedFormat>(blocks: &[P::Block], nb: usize) -> Vec<P> {
    let rows = blocks.len() / nb.max(1);
    let mut out = Vec::with_capacity(rows.div_ceil(ROWS) * nb);
    for g in 0..rows.div_ceil(ROWS) {
        for b in 0..nb {
            out.push(P::pack(std::array::from_fn(|l| {
                let row = g * ROWS + l;
                (row < rows).then(|| &blocks[row * nb + b])
            })));
        }
    }
    out
}

/// Row `row` of a packed matrix of `nb` blocks per row, dequantised into `out`
/// (`nb * 32` values), exactly as the GGUF block format dequantises it.
pub fn dequantize_row<P: PackedFormat>(w: &[P], nb: usize, row: usize, out: &mut [f32]) {
    let (group, l) = (row / ROWS, row % ROWS);
    for (block, o) in w[group * nb..(group + 1) * nb]
        .iter()
        .zip(out.chunks_exact_mut(BLOCK))
    {
        block.unpack(l).dequantize(o);
    }
}

/// The reference: for every row of the packed groups `w` (`nb` blocks per row) and every
/// activation row of `acts`, writes the product to `out[r * ld + row]`: the row-at-a-time
/// reference [`dot_scalar`] of the unpacked row.
pub fn matrix_reference<P: PackedFormat>(
    w: &[P],
    nb: usize,
    acts: &[ActBlock],
    out: &mut [f32],
    ld: usize,
) {
    reference_rows(w, nb, acts, out, ld, dot_scalar);
}

/// The reference of [`Accumulation::Blocks`]: [`matrix_reference`] with [`dot_blocks`].
pub fn matrix_reference_blocks<P: PackedFormat>(
    w: &[P],
    nb: usize,
    acts: &[ActBlock],
    out: &mut [f32],
    ld: usize,
) {
    reference_rows(w, nb, acts, out, ld, dot_blocks);
}

/// Every unpacked row's `dot` with every activation row.
fn reference_rows<P: PackedFormat>(
    w: &[P],
    nb: usize,
    acts: &[ActBlock],
    out: &mut [f32],
    ld: usize,
    dot: fn(&[P::Block], &[ActBlock]) -> f32,
) {
    let n = acts.len() / nb;
    for (g, group) in w.chunks_exact(nb).enumerate() {
        for l in 0..ROWS {
            let row: Vec<P::Block> = group.iter().map(|p| p.unpack(l)).collect();
            for r in 0..n {
                out[r * ld + g * ROWS + l] = dot(&row, &acts[r * nb..(r + 1) * nb]);
            }
        }
    }
}

/// The order in which a packed product adds up its terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accumulation {
    /// ggml's: each block's eight lanes of four products are converted and scaled apart, into
    /// eight running sums added up at the end. Bit-identical to llama.cpp, so that greedy
    /// decoding reproduces it.
    #[default]
    Ggml,
    /// Each block's 32 products summed exactly as integers, then converted and scaled once:
    /// an eighth of the float work, about 1.6 times the speed with AVX2, and no less accurate
    /// (the integer sums are exact), but not llama.cpp's last bits.
    Blocks,
}

impl Accumulation {
    /// `HELIXFLOW_BLOCK_PRODUCTS=1` asks for [`Accumulation::Blocks`].
    pub fn from_env() -> Self {
        match std::env::var_os("HELIXFLOW_BLOCK_PRODUCTS") {
            Some(v) if v == "1" => Accumulation::Blocks,
            _ => Accumulation::Ggml,
        }
    }
}

/// Products of the packed groups `w` (`nb` blocks per row) with every activation row of `acts`
/// (rows of `nb` blocks): row `row` of the matrix times activation row `r` goes to
/// `out[r * ld + row]`, for the eight rows of every group. With the fastest kernel this CPU
/// has; bit-identical to [`matrix_reference`].
pub fn matrix<P: PackedFormat>(w: &[P], nb: usize, acts: &[ActBlock], out: &mut [f32], ld: usize) {
    matrix_in(Accumulation::Ggml, w, nb, acts, out, ld);
}

/// [`matrix`] in the order `order`.
pub fn matrix_in<P: PackedFormat>(
    order: Accumulation,
    w: &[P],
    nb: usize,
    acts: &[ActBlock],
    out: &mut [f32],
    ld: usize,
) {
    matrix_with(Isa::best(), order, w, nb, acts, out, ld);
}

/// [`matrix_in`] with the kernels of `isa`, or the reference of `order` if there are none for
/// it here.
pub fn matrix_with<P: PackedFormat>(
    isa: Isa,
    order: Accumulation,
    w: &[P],
    nb: usize,
    acts: &[ActBlock],
    out: &mut [f32],
    ld: usize,
) {
    let (groups, n) = (w.len() / nb.max(1), acts.len() / nb.max(1));
    assert!(
        nb > 0
            && w.len() == groups * nb
            && acts.len() == n * nb
            && ld >= groups * ROWS
            && out.len() >= n.saturating_sub(1) * ld + groups * ROWS,
        "packed matrix: {} blocks of {nb} per row, {} activation blocks, {} outputs of stride {ld}",
        w.len(),
        acts.len(),
        out.len()
    );
    if n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa.is_supported() {
        match isa {
            // SAFETY: `is_supported` checked the features each kernel is compiled for.
            Isa::Avx512Vnni => return unsafe { P::matrix_vnni(order, w, nb, acts, out, ld) },
            Isa::Avx2 => return unsafe { P::matrix_avx2(order, w, nb, acts, out, ld) },
            _ => {}
        }
    }
    let _ = isa;
    match order {
        Accumulation::Ggml => matrix_reference(w, nb, acts, out, ld),
        Accumulation::Blocks => matrix_reference_blocks(w, nb, acts, out, ld),
    }
}

/// Whether packing pays on this CPU: where [`matrix`] has vector kernels. (Elsewhere, such as
/// on aarch64, the row-at-a-time kernels of [`crate::dot`] are the fast path.)
/// `HELIXFLOW_NO_PACKED` says no, to compare with the row-at-a-time kernels.
pub fn is_preferred() -> bool {
    std::env::var_os("HELIXFLOW_NO_PACKED").is_none()
        && matches!(Isa::best(), Isa::Avx2 | Isa::Avx512Vnni)
}

mod private {
    #[cfg(target_arch = "x86_64")]
    use super::Accumulation;
    #[cfg(target_arch = "x86_64")]
    use crate::quant::ActBlock;

    /// The vector kernels of a packed format (see `avx2.rs`).
    pub trait Kernels: Sized {
        /// `matrix` with AVX2.
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA and F16C.
        #[cfg(target_arch = "x86_64")]
        unsafe fn matrix_avx2(
            order: Accumulation,
            w: &[Self],
            nb: usize,
            acts: &[ActBlock],
            out: &mut [f32],
            ld: usize,
        );

        /// `matrix` with AVX-512 VNNI on 256-bit registers.
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA, F16C, AVX-512F, AVX-512VL and AVX-512 VNNI.
        #[cfg(target_arch = "x86_64")]
        unsafe fn matrix_vnni(
            order: Accumulation,
            w: &[Self],
            nb: usize,
            acts: &[ActBlock],
            out: &mut [f32],
            ld: usize,
        );
    }

    #[cfg(not(target_arch = "x86_64"))]
    impl<T> Kernels for T {}
}

#[cfg(test)]
mod tests;

//! `Q4_K`: 256 weights as eight 32-value sub-blocks of 4-bit values `q * d * sc - dmin * m`,
//! with 6-bit sub-block scales `sc` and mins `m`. Its kernels are those of every format with
//! that layout of scales and mins ([`super::scale_min`]).

use half::f16;

use super::scale_min::{self, scales_and_mins_k4, ScaleMin};
use super::{kquant_format, le16, parse, BlockQ8K, KQuantKernels, QK_K};

/// ggml's `block_q4_K`.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ4K {
    /// Superblock scale of the sub-block scales, f16 bits.
    pub d: u16,
    /// Superblock scale of the sub-block mins, f16 bits.
    pub dmin: u16,
    /// Eight 6-bit scales and eight 6-bit mins, packed (see [`BlockQ4K::scales_and_mins`]).
    pub scales: [u8; 12],
    /// Bytes `32 * j..32 * j + 32` hold values `64 * j..64 * j + 32` in their low nibbles and
    /// the next 32 values in their high nibbles.
    pub qs: [u8; QK_K / 2],
}

impl BlockQ4K {
    /// Bytes per block in a file.
    pub const BYTES: usize = 144;

    /// Reads blocks from GGUF bytes (a multiple of [`Self::BYTES`]).
    pub fn parse_all(bytes: &[u8]) -> Vec<Self> {
        parse(bytes, Self::BYTES, |b| Self {
            d: le16(b, 0),
            dmin: le16(b, 2),
            scales: b[4..16].try_into().expect("12 bytes"),
            qs: b[16..144].try_into().expect("128 bytes"),
        })
    }

    /// The eight sub-block scales followed by the eight sub-block mins
    /// ([`scales_and_mins_k4`]).
    pub fn scales_and_mins(&self) -> [u8; 16] {
        scales_and_mins_k4(&self.scales)
    }

    /// Value `i` (0..256) before scaling, 0..16.
    fn value(&self, i: usize) -> i32 {
        let byte = self.qs[i / 64 * 32 + i % 32];
        i32::from(if i % 64 < 32 { byte & 0x0f } else { byte >> 4 })
    }

    /// The 256 weights, exactly as ggml's `dequantize_row_q4_K`: `d * sc` and `dmin * m`
    /// rounded first, then `(d * sc) * q - dmin * m` without fusing (ggml-base is built
    /// without FMA).
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = f16::from_bits(self.d).to_f32();
        let min = f16::from_bits(self.dmin).to_f32();
        let sm = self.scales_and_mins();
        for (j, (q, o)) in self
            .qs
            .chunks_exact(32)
            .zip(out.chunks_exact_mut(64))
            .enumerate()
        {
            let (d1, m1) = (d * f32::from(sm[2 * j]), min * f32::from(sm[8 + 2 * j]));
            let (d2, m2) = (d * f32::from(sm[2 * j + 1]), min * f32::from(sm[9 + 2 * j]));
            let (low, high) = o.split_at_mut(32);
            for ((&q, lo), hi) in q.iter().zip(low).zip(high) {
                *lo = d1 * f32::from(q & 0x0f) - m1;
                *hi = d2 * f32::from(q >> 4) - m2;
            }
        }
    }
}

/// The reference dot product of one `Q4_K` weight row with one `Q8_K` activation row, with the
/// float operations of ggml's AVX2 `ggml_vec_dot_q4_K_q8_K` in its order
/// ([`scale_min::dot_reference`]): per superblock `d = y.d * x.d` and `dmin = -y.d * x.dmin`;
/// lane `l` of eight takes the exact integer `sum over sub-blocks s of sc[s] * (sum of
/// q * q8 over values 32s + 4l..32s + 4l + 4)` and adds `d` times it with a fused
/// multiply-add; the mins term runs in four lanes of its own (`Q4_K`'s
/// [`ScaleMin::MINS`]); the result is `hsum8(lanes) + ((m0 + m2) + (m1 + m3))`.
pub fn dot_q4k_reference(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    scale_min::dot_reference(x, y)
}

/// [`dot_q4k_reference`] in the order of ggml's tiled kernel ([`super::KQuantOrder::Tiled`],
/// [`scale_min::dot_tiled_reference`]).
pub fn dot_q4k_tiled_reference(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    scale_min::dot_tiled_reference(x, y)
}

impl ScaleMin for BlockQ4K {
    const MINS: scale_min::Mins = scale_min::Mins::FourLanes;

    fn header(&self) -> (u16, u16, &[u8; 12]) {
        (self.d, self.dmin, &self.scales)
    }
    fn value(&self, i: usize) -> i32 {
        BlockQ4K::value(self, i)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn values_avx2(&self, j: usize) -> [std::arch::x86_64::__m256i; 2] {
        scale_min::nibbles_avx2(&self.qs, j)
    }

    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    fn values_neon(&self, j: usize) -> [[std::arch::aarch64::int8x16_t; 2]; 2] {
        use std::arch::aarch64::vreinterpretq_s8_u8;
        // Nibbles are 0..16: as signed bytes they are the same numbers.
        // SAFETY: only inlined into kernels compiled with NEON.
        scale_min::nibbles_neon(&self.qs, j)
            .map(|half| half.map(|v| unsafe { vreinterpretq_s8_u8(v) }))
    }
}

kquant_format!(
    BlockQ4K,
    "Q4_K",
    dot_q4k_reference,
    dot_q4k_tiled_reference,
    q4k_rows
);

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::avx2::{entry_points, rows_in_tiles, Madd, Vnni, TILE, TILE_VNNI};
    use super::super::scale_min::avx2::tile;
    use super::{BlockQ4K, BlockQ8K};

    entry_points!(BlockQ4K);
    tile!(tile_avx2, BlockQ4K, "avx2,fma,f16c");
    tile!(
        tile_vnni,
        BlockQ4K,
        "avx2,fma,f16c,avx512f,avx512vl,avx512vnni"
    );
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::kquant::tests::{activations, check};

    fn random_block(rng: &mut StdRng) -> BlockQ4K {
        let mut block = BlockQ4K {
            d: f16::from_f32(rng.random_range(1e-4f32..2e-3)).to_bits(),
            dmin: f16::from_f32(rng.random_range(1e-4f32..2e-3)).to_bits(),
            scales: [0; 12],
            qs: [0; QK_K / 2],
        };
        rng.fill(&mut block.scales[..]);
        rng.fill(&mut block.qs[..]);
        block
    }

    #[test]
    fn q4k_matches_the_reference() {
        check(random_block);
    }

    #[test]
    fn q4k_parses_and_dequantizes() {
        let mut bytes = vec![0u8; BlockQ4K::BYTES];
        bytes[0..2].copy_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
        bytes[2..4].copy_from_slice(&f16::from_f32(0.25).to_bits().to_le_bytes());
        // Sub-block 0: scale 1, min 2; the top bits make sub-block 4's scale 16 + 3 and its
        // min 32 + 5.
        bytes[4] = 0b01_000001;
        bytes[8] = 0b10_000010;
        bytes[12] = 0x53;
        bytes[16] = 0x3f; // value 0 = 15, value 32 = 3
        bytes[16 + 64] = 0x07; // value 128 = 7
        let block = BlockQ4K::parse_all(&bytes)[0];
        let sm = block.scales_and_mins();
        assert_eq!((sm[0], sm[8], sm[4], sm[12]), (1, 2, 19, 37));
        let mut out = [0f32; QK_K];
        block.dequantize(&mut out);
        assert_eq!(out[0], 0.5 * 15.0 - 0.5);
        assert_eq!(out[32], 0.0); // sub-block 1: scale and min 0
        assert_eq!(out[128], 0.5 * 19.0 * 7.0 - 0.25 * 37.0);
        assert_eq!(out[129], -0.25 * 37.0);
        for i in 0..QK_K {
            let q = block.value(i) as f32;
            let want = 0.5 * f32::from(sm[i / 32]) * q - 0.25 * f32::from(sm[8 + i / 32]);
            assert_eq!(out[i], want, "value {i}");
        }
    }

    #[test]
    fn q4k_dot_of_one_block_is_the_dequantised_dot() {
        let mut rng = StdRng::seed_from_u64(5);
        let block = random_block(&mut rng);
        let acts = activations(&mut rng, 1, 1);
        let mut w = [0f32; QK_K];
        block.dequantize(&mut w);
        let want: f32 = w
            .iter()
            .zip(&acts[0].qs)
            .map(|(&w, &q)| w * f32::from(q) * acts[0].d)
            .sum();
        let got = dot_q4k_reference(&[block], &acts);
        assert!(
            (got - want).abs() < 1e-3 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
}

//! `Q5_K`: 256 weights as eight 32-value sub-blocks of 5-bit values `q * d * sc - dmin * m`,
//! with 6-bit sub-block scales `sc` and mins `m` packed as `Q4_K`'s; the low four bits of each
//! value are stored as `Q4_K` stores its nibbles, the fifth in `qh`. Its kernels are those of
//! [`super::scale_min`].

use half::f16;

use super::scale_min::{self, scales_and_mins_k4, ScaleMin};
use super::{kquant_format, le16, parse, BlockQ8K, KQuantKernels, QK_K};

/// ggml's `block_q5_K`.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ5K {
    /// Superblock scale of the sub-block scales, f16 bits.
    pub d: u16,
    /// Superblock scale of the sub-block mins, f16 bits.
    pub dmin: u16,
    /// Eight 6-bit scales and eight 6-bit mins, packed ([`scales_and_mins_k4`]).
    pub scales: [u8; 12],
    /// The fifth bits: bit `2j` of byte `l` is value `64j + l`'s, bit `2j + 1` value
    /// `64j + 32 + l`'s.
    pub qh: [u8; QK_K / 8],
    /// The low four bits, laid out as `Q4_K`'s nibbles: bytes `32j..32j + 32` hold values
    /// `64j..64j + 32` in their low nibbles and the next 32 in their high nibbles.
    pub qs: [u8; QK_K / 2],
}

impl BlockQ5K {
    /// Bytes per block in a file.
    pub const BYTES: usize = 176;

    /// Reads blocks from GGUF bytes (a multiple of [`Self::BYTES`]).
    pub fn parse_all(bytes: &[u8]) -> Vec<Self> {
        parse(bytes, Self::BYTES, |b| Self {
            d: le16(b, 0),
            dmin: le16(b, 2),
            scales: b[4..16].try_into().expect("12 bytes"),
            qh: b[16..48].try_into().expect("32 bytes"),
            qs: b[48..176].try_into().expect("128 bytes"),
        })
    }

    /// The eight sub-block scales followed by the eight sub-block mins.
    pub fn scales_and_mins(&self) -> [u8; 16] {
        scales_and_mins_k4(&self.scales)
    }

    /// Value `i` (0..256) before scaling, 0..32.
    fn value(&self, i: usize) -> i32 {
        let (j, l) = (i / 64, i % 32);
        let byte = self.qs[32 * j + l];
        let (low, bit) = if i % 64 < 32 {
            (byte & 0x0f, 2 * j)
        } else {
            (byte >> 4, 2 * j + 1)
        };
        i32::from(low) + 16 * i32::from((self.qh[l] >> bit) & 1)
    }

    /// The 256 weights, exactly as ggml's `dequantize_row_q5_K`: `d * sc` and `dmin * m`
    /// rounded first, then `(d * sc) * q - dmin * m` without fusing (ggml-base is built
    /// without FMA).
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = f16::from_bits(self.d).to_f32();
        let min = f16::from_bits(self.dmin).to_f32();
        let sm = self.scales_and_mins();
        for (i, o) in out[..QK_K].iter_mut().enumerate() {
            let s = i / 32;
            let (scale, m) = (d * f32::from(sm[s]), min * f32::from(sm[8 + s]));
            *o = scale * self.value(i) as f32 - m;
        }
    }
}

/// The reference dot product of one `Q5_K` weight row with one `Q8_K` activation row, with the
/// float operations of ggml's AVX2 `ggml_vec_dot_q5_K_q8_K` in its order
/// ([`scale_min::dot_reference`]): as `Q4_K`'s, but the mins' term of each superblock is one
/// integer sum added into one f32 ([`scale_min::Mins::OneSum`]).
pub fn dot_q5k_reference(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    scale_min::dot_reference(x, y)
}

/// [`dot_q5k_reference`] in the order of ggml's tiled kernel, which is `Q4_K`'s
/// ([`scale_min::dot_tiled_reference`]).
pub fn dot_q5k_tiled_reference(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    scale_min::dot_tiled_reference(x, y)
}

impl ScaleMin for BlockQ5K {
    const MINS: scale_min::Mins = scale_min::Mins::OneSum;

    fn header(&self) -> (u16, u16, &[u8; 12]) {
        (self.d, self.dmin, &self.scales)
    }
    fn value(&self, i: usize) -> i32 {
        BlockQ5K::value(self, i)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn values_avx2(&self, j: usize) -> [std::arch::x86_64::__m256i; 2] {
        use std::arch::x86_64::*;
        let [low, high] = scale_min::nibbles_avx2(&self.qs, j);
        // SAFETY: `qh` is 32 readable bytes, loaded unaligned; only inlined into kernels
        // compiled with AVX2.
        unsafe {
            let hbits = _mm256_loadu_si256(self.qh.as_ptr().cast());
            let one = _mm256_set1_epi8(1);
            // Bit `2j` (then `2j + 1`) of every byte, moved to bit 4. A 16-bit shift moves
            // the upper byte's bits into the lower byte's top, which the mask of 1 drops.
            let shifted = _mm256_srl_epi16(hbits, _mm_cvtsi32_si128(2 * j as i32));
            let fifth_low = _mm256_slli_epi16::<4>(_mm256_and_si256(shifted, one));
            let fifth_high =
                _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<1>(shifted), one));
            [
                _mm256_or_si256(low, fifth_low),
                _mm256_or_si256(high, fifth_high),
            ]
        }
    }

    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    fn values_neon(&self, j: usize) -> [[std::arch::aarch64::int8x16_t; 2]; 2] {
        use std::arch::aarch64::*;
        let nibbles = scale_min::nibbles_neon(&self.qs, j);
        // SAFETY: 16-byte loads of a 32-byte array; only inlined into kernels compiled with
        // NEON.
        unsafe {
            let high = [vld1q_u8(self.qh.as_ptr()), vld1q_u8(self.qh[16..].as_ptr())];
            let one = vdupq_n_u8(1);
            // qh shifted right by 2j (a negative left shift): bit 0 is the low sub-block's
            // fifth bit, bit 1 the high one's; each moved to bit 4.
            let shift = vdupq_n_s8(-(2 * j as i8));
            let mut out = [[vdupq_n_s8(0); 2]; 2];
            for half in 0..2 {
                let h = vshlq_u8(high[half], shift);
                let fifth_low = vshlq_n_u8::<4>(vandq_u8(h, one));
                let fifth_high = vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<1>(h), one));
                out[0][half] = vreinterpretq_s8_u8(vorrq_u8(nibbles[0][half], fifth_low));
                out[1][half] = vreinterpretq_s8_u8(vorrq_u8(nibbles[1][half], fifth_high));
            }
            out
        }
    }
}

kquant_format!(
    BlockQ5K,
    "Q5_K",
    dot_q5k_reference,
    dot_q5k_tiled_reference,
    q5k_rows
);

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::avx2::{entry_points, rows_in_tiles, Madd, Vnni, TILE, TILE_VNNI};
    use super::super::scale_min::avx2::tile;
    use super::{BlockQ5K, BlockQ8K};

    entry_points!(BlockQ5K);
    tile!(tile_avx2, BlockQ5K, "avx2,fma,f16c");
    tile!(
        tile_vnni,
        BlockQ5K,
        "avx2,fma,f16c,avx512f,avx512vl,avx512vnni"
    );
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::Rng;

    use super::*;
    use crate::kquant::tests::check;

    fn random_block(rng: &mut StdRng) -> BlockQ5K {
        let mut block = BlockQ5K {
            d: f16::from_f32(rng.random_range(1e-4f32..2e-3)).to_bits(),
            dmin: f16::from_f32(rng.random_range(1e-4f32..2e-3)).to_bits(),
            scales: [0; 12],
            qh: [0; QK_K / 8],
            qs: [0; QK_K / 2],
        };
        rng.fill(&mut block.scales[..]);
        rng.fill(&mut block.qh[..]);
        rng.fill(&mut block.qs[..]);
        block
    }

    #[test]
    fn q5k_matches_the_reference() {
        check(random_block);
    }

    #[test]
    fn q5k_parses_and_dequantizes() {
        let mut bytes = vec![0u8; BlockQ5K::BYTES];
        bytes[0..2].copy_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
        bytes[2..4].copy_from_slice(&f16::from_f32(0.25).to_bits().to_le_bytes());
        bytes[4] = 1; // sub-block 0: scale 1
        bytes[5] = 2; // sub-block 1: scale 2
        bytes[8] = 3; // sub-block 0: min 3
        bytes[16 + 5] = 0b0000_0110; // value 5's fifth bit clear, 37's and 69's set
        bytes[48 + 5] = 0x9f; // value 5 = 15, value 37 = 9 (+ 16)
        bytes[48 + 32 + 5] = 0x02; // value 69 = 2 (+ 16)
        let block = BlockQ5K::parse_all(&bytes)[0];
        assert_eq!(
            (block.value(5), block.value(37), block.value(69)),
            (15, 25, 18)
        );
        let mut out = [0f32; QK_K];
        block.dequantize(&mut out);
        assert_eq!(out[5], 0.5 * 15.0 - 0.25 * 3.0);
        assert_eq!(out[37], 0.5 * 2.0 * 25.0);
        assert_eq!(out[69], 0.0); // sub-block 2: scale and min 0
        assert_eq!(out[0], -0.25 * 3.0);
    }
}

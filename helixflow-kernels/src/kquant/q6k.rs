//! `Q6_K`: 256 weights as sixteen 16-value sub-blocks of 6-bit values `(q - 32) * d * sc`,
//! with signed 8-bit sub-block scales `sc`.

use half::f16;

use super::{kquant_format, le16, parse, BlockQ8K, KQuantKernels, QK_K};
use crate::math::hsum8;

/// ggml's `block_q6_K`.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ6K {
    /// Low four bits: in each 128-value half, bytes `0..32` hold values `0..32` in their low
    /// nibbles and `64..96` in their high nibbles, bytes `32..64` values `32..64` and
    /// `96..128`.
    pub ql: [u8; QK_K / 2],
    /// High two bits: in each half, byte `l` holds those of values `l`, `l + 32`, `l + 64`
    /// and `l + 96`, from the lowest bits up.
    pub qh: [u8; QK_K / 4],
    /// Scale of each 16 values.
    pub scales: [i8; QK_K / 16],
    /// Superblock scale, f16 bits.
    pub d: u16,
}

impl BlockQ6K {
    /// Bytes per block in a file.
    pub const BYTES: usize = 210;

    /// Reads blocks from GGUF bytes (a multiple of [`Self::BYTES`]).
    pub fn parse_all(bytes: &[u8]) -> Vec<Self> {
        parse(bytes, Self::BYTES, |b| {
            let mut scales = [0i8; QK_K / 16];
            for (s, &byte) in scales.iter_mut().zip(&b[192..208]) {
                *s = byte as i8;
            }
            Self {
                ql: b[0..128].try_into().expect("128 bytes"),
                qh: b[128..192].try_into().expect("64 bytes"),
                scales,
                d: le16(b, 208),
            }
        })
    }

    /// Value `i` (0..256) before scaling, -32..32.
    fn value(&self, i: usize) -> i32 {
        let (half, l) = (i / 128, i % 128);
        let low = self.ql[64 * half + l % 64];
        let low = if l < 64 { low & 0x0f } else { low >> 4 };
        let high = (self.qh[32 * half + l % 32] >> (2 * (l / 32))) & 3;
        i32::from(low | (high << 4)) - 32
    }

    /// The 256 weights, exactly as ggml's `dequantize_row_q6_K`: `(d * sc) * (q - 32)`.
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = f16::from_bits(self.d).to_f32();
        for (i, o) in out[..QK_K].iter_mut().enumerate() {
            *o = d * f32::from(self.scales[i / 16]) * self.value(i) as f32;
        }
    }
}

/// The reference dot product of one `Q6_K` weight row with one `Q8_K` activation row, with the
/// float operations of ggml's AVX2 `ggml_vec_dot_q6_K_q8_K` in its order (llama.cpp since the
/// offset of 32 was taken out of the inner loop): per superblock `d = y.d * x.d`; lane `l` of
/// eight takes the exact integer sum of `sc * q * q8` (`q` unsigned, 0..64) over values
/// `4l..4l + 4` of each of the eight 32-value groups, minus `32 * (sc * bsum)` of the two
/// 16-value sub-blocks of group `l` (`_mm256_madd_epi16` of the activation's sub-block sums
/// with the scales), and adds `d` times it with a fused multiply-add; the lanes are reduced
/// with [`hsum8`].
pub fn dot_q6k_reference(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let mut lanes = [0f32; 8];
    for (xb, yb) in x.iter().zip(y) {
        let d = yb.d * f16::from_bits(xb.d).to_f32();
        for (l, lane) in lanes.iter_mut().enumerate() {
            let products: i32 = (0..QK_K / 32)
                .flat_map(|group| 32 * group + 4 * l..32 * group + 4 * l + 4)
                .map(|i| i32::from(xb.scales[i / 16]) * (xb.value(i) + 32) * i32::from(yb.qs[i]))
                .sum();
            let sum = products - 32 * offset_sum(xb, yb, l);
            *lane = d.mul_add(sum as f32, *lane);
        }
    }
    hsum8(&lanes)
}

/// `sc * bsum` of the two 16-value sub-blocks of group `l`: what lane `l` subtracts, times 32.
#[inline(always)]
fn offset_sum(xb: &BlockQ6K, yb: &BlockQ8K, l: usize) -> i32 {
    i32::from(yb.bsums[2 * l]) * i32::from(xb.scales[2 * l])
        + i32::from(yb.bsums[2 * l + 1]) * i32::from(xb.scales[2 * l + 1])
}

/// [`dot_q6k_reference`] in the order of ggml's tiled kernel ([`super::KQuantOrder::Tiled`]): per
/// superblock the exact integer `s1 = sum of sc * (q * q8 - 32 * bsum)` over the sixteen
/// sub-blocks (`q` unsigned), then `r = s1 * x.d` rounded and `acc = acc + r * y.d` fused.
pub fn dot_q6k_tiled_reference(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let mut acc = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let s1: i32 = (0..QK_K / 16)
            .map(|s| {
                let raw: i32 = (16 * s..16 * s + 16)
                    .map(|i| (xb.value(i) + 32) * i32::from(yb.qs[i]))
                    .sum();
                i32::from(xb.scales[s]) * (raw - 32 * i32::from(yb.bsums[s]))
            })
            .sum();
        let r = s1 as f32 * f16::from_bits(xb.d).to_f32();
        acc = r.mul_add(yb.d, acc);
    }
    acc
}

kquant_format!(
    BlockQ6K,
    "Q6_K",
    dot_q6k_reference,
    dot_q6k_tiled_reference,
    q6k_rows
);

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::avx2::{
        act_rows, entry_points, f16_to_f32, hsum8, load32, prefetch_ahead, rows_in_tiles, store8,
        sum_i32x8, transpose_sum8, Madd, ScaledSum, Vnni, TILE, TILE_VNNI,
    };
    use super::{BlockQ6K, BlockQ8K};

    entry_points!(BlockQ6K);

    /// `R` rows of ggml's AVX2 `ggml_vec_dot_q6_K_q8_K` (or, if `TILED`, of its tiled
    /// kernel's order), unpacking each weight superblock once for all of them, compiled for
    /// the features `$features` with `S` scaling and adding the sub-block sums.
    macro_rules! tile {
        ($name:ident, $features:literal) => {
            #[target_feature(enable = $features)]
            fn $name<S: ScaledSum, const R: usize, const TILED: bool>(
                x: &[BlockQ6K],
                acts: &[BlockQ8K],
                out: &mut [f32],
            ) {
                let rows = act_rows::<R>(acts, x.len());
                let m4 = _mm256_set1_epi8(0x0f);
                let m2 = _mm256_set1_epi8(3);
                let mut acc = [_mm256_setzero_ps(); R];
                let mut tiled = [0f32; R];
                // The tiled order's sums of a tile of eight rows, one lane a row.
                let mut tiled8 = _mm256_setzero_ps();
                for (b, xb) in x.iter().enumerate() {
                    prefetch_ahead(xb);
                    let xd = f16_to_f32(xb.d);
                    let mut sumi = [_mm256_setzero_si256(); R];
                    // SAFETY: `scales` is 16 readable bytes; the load is unaligned.
                    let scales16 =
                        _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(xb.scales.as_ptr().cast()) });
                    for j in 0..2 {
                        let bits1 = load32(&xb.ql[64 * j..]);
                        let bits2 = load32(&xb.ql[64 * j + 32..]);
                        let bits_h = load32(&xb.qh[32 * j..]);
                        let high = |shift| {
                            let two = _mm256_and_si256(
                                _mm256_srl_epi16(bits_h, _mm_cvtsi32_si128(shift)),
                                m2,
                            );
                            _mm256_slli_epi16::<4>(two)
                        };
                        // Values 0..32, 32..64, 64..96 and 96..128 of this half, 0..64 unsigned.
                        let q = [
                            _mm256_or_si256(_mm256_and_si256(bits1, m4), high(0)),
                            _mm256_or_si256(_mm256_and_si256(bits2, m4), high(2)),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16::<4>(bits1), m4),
                                high(4),
                            ),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16::<4>(bits2), m4),
                                high(6),
                            ),
                        ];
                        // The scales of each group's two 16-value halves, each in eight 16-bit lanes.
                        let scales: [__m256i; 4] = std::array::from_fn(|k| {
                            let s =
                                |h: usize| _mm_set1_epi16(i16::from(xb.scales[8 * j + 2 * k + h]));
                            _mm256_set_m128i(s(1), s(0))
                        });
                        for r in 0..R {
                            let q8 = &rows[r][b].qs[128 * j..];
                            for k in 0..4 {
                                let q8k = load32(&q8[32 * k..]);
                                let p16 = _mm256_maddubs_epi16(q[k], q8k);
                                sumi[r] = S::add(sumi[r], scales[k], p16);
                            }
                        }
                    }
                    if TILED && R == 8 {
                        // Eight rows' superblock sums reduced together, and the tiled order's
                        // two float operations on all eight lanes at once (as below, per row).
                        let mut sums = [_mm256_setzero_si256(); 8];
                        let mut yd = [0f32; 8];
                        for r in 0..8 {
                            // SAFETY: `bsums` is 16 readable i16; the load is unaligned.
                            let bsums =
                                unsafe { _mm256_loadu_si256(rows[r][b].bsums.as_ptr().cast()) };
                            let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bsums, scales16));
                            sums[r] = _mm256_sub_epi32(sumi[r], offset);
                            yd[r] = rows[r][b].d;
                        }
                        let s1 = _mm256_cvtepi32_ps(transpose_sum8(sums));
                        let part = _mm256_mul_ps(s1, _mm256_set1_ps(xd));
                        // SAFETY: `yd` is eight readable f32.
                        let yd = unsafe { _mm256_loadu_ps(yd.as_ptr()) };
                        tiled8 = _mm256_fmadd_ps(part, yd, tiled8);
                        continue;
                    }
                    for r in 0..R {
                        // The offset of 32: `32 * sc * bsum`, one 32-value group per lane.
                        // SAFETY: `bsums` is 16 readable i16; the load is unaligned.
                        let bsums = unsafe { _mm256_loadu_si256(rows[r][b].bsums.as_ptr().cast()) };
                        let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bsums, scales16));
                        sumi[r] = _mm256_sub_epi32(sumi[r], offset);
                        if TILED {
                            let part = sum_i32x8(sumi[r]) as f32 * xd;
                            tiled[r] = part.mul_add(rows[r][b].d, tiled[r]);
                            continue;
                        }
                        let d = rows[r][b].d * xd;
                        acc[r] =
                            _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
                    }
                }
                if TILED && R == 8 {
                    return store8(tiled8, out);
                }
                for r in 0..R {
                    out[r] = if TILED { tiled[r] } else { hsum8(acc[r]) };
                }
            }
        };
    }

    tile!(tile_avx2, "avx2,fma,f16c");
    tile!(tile_vnni, "avx2,fma,f16c,avx512f,avx512vl,avx512vnni");
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::Rng;

    use super::*;
    use crate::kquant::tests::check;

    fn random_block(rng: &mut StdRng) -> BlockQ6K {
        let mut block = BlockQ6K {
            ql: [0; QK_K / 2],
            qh: [0; QK_K / 4],
            scales: [0; QK_K / 16],
            d: f16::from_f32(rng.random_range(1e-4f32..1e-3)).to_bits(),
        };
        rng.fill(&mut block.ql[..]);
        rng.fill(&mut block.qh[..]);
        rng.fill(&mut block.scales[..]);
        block
    }

    #[test]
    fn q6k_matches_the_reference() {
        check(random_block);
    }

    #[test]
    fn q6k_parses_and_dequantizes() {
        let mut bytes = vec![0u8; BlockQ6K::BYTES];
        bytes[0] = 0x21; // low bits: value 0 = 1, value 64 = 2
        bytes[128] = 0b11_10_01_00; // high bits: value 0 = 0, 32 = 1, 64 = 2, 96 = 3
        bytes[192] = (-2i8) as u8; // scale of values 0..16
        bytes[196] = 3; // scale of values 64..80
        bytes[201] = 5; // scale of values 144..160 (second half: ql 64.., qh 32..)
        bytes[64 + 16] = 0x0f; // value 144 low bits 15
        bytes[208..210].copy_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
        let block = BlockQ6K::parse_all(&bytes)[0];
        assert_eq!(block.scales[0], -2);
        let mut out = [0f32; QK_K];
        block.dequantize(&mut out);
        assert_eq!(out[0], 0.5 * -2.0 * (1.0 - 32.0));
        assert_eq!(out[64], 0.5 * 3.0 * ((2.0 + 32.0) - 32.0));
        assert_eq!(out[144], 0.5 * 5.0 * (15.0 - 32.0));
        assert_eq!(out[1], 0.5 * -2.0 * -32.0);
    }
}

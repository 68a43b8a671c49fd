//! `Q4_K`: 256 weights as eight 32-value sub-blocks of 4-bit values `q * d * sc - dmin * m`,
//! with 6-bit sub-block scales `sc` and mins `m`.

use half::f16;

use super::{
    dot_rows_with, kquant_kernels, le16, parse, BlockQ8K, KQuantKernels, KQuantOrder, QK_K,
};
use crate::dot::Isa;
use crate::format::QuantFormat;
use crate::math::hsum8;

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

    /// The eight sub-block scales followed by the eight sub-block mins (ggml's
    /// `get_scale_min_k4`): the first four of each are the low six bits of bytes 0..4 and
    /// 4..8; the last four take their low nibbles from bytes 8..12 and their top two bits
    /// from the top bits of bytes 0..4 (scales) and 4..8 (mins).
    pub fn scales_and_mins(&self) -> [u8; 16] {
        let q = &self.scales;
        let mut out = [0u8; 16];
        for j in 0..4 {
            out[j] = q[j] & 63;
            out[8 + j] = q[j + 4] & 63;
            out[4 + j] = (q[j + 8] & 0x0f) | ((q[j] >> 6) << 4);
            out[12 + j] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
        }
        out
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
/// float operations of ggml's AVX2 `ggml_vec_dot_q4_K_q8_K` in its order:
///
/// - per superblock `d = y.d * x.d` and `dmin = -y.d * x.dmin`;
/// - lane `l` of eight takes the exact integer `sum over sub-blocks s of sc[s] * (sum of
///   q * q8 over values 32s + 4l..32s + 4l + 4)` and adds `d` times it with a fused
///   multiply-add;
/// - the mins term runs in four lanes of its own: the bsums are paired into eight 32-value
///   sums (`_mm_hadd_epi16`), lane `k` takes `m[2k] * s[2k] + m[2k + 1] * s[2k + 1]`
///   (`_mm_madd_epi16`) and adds `dmin` times it with a fused multiply-add;
/// - the result is `hsum8(lanes) + ((m0 + m2) + (m1 + m3))`.
pub fn dot_q4k_reference(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut mins = [0f32; 4];
    for (xb, yb) in x.iter().zip(y) {
        let d = yb.d * f16::from_bits(xb.d).to_f32();
        let dmin = -yb.d * f16::from_bits(xb.dmin).to_f32();
        let sm = xb.scales_and_mins();

        let sum32 = |s: usize| i32::from(yb.bsums[2 * s]) + i32::from(yb.bsums[2 * s + 1]);
        for (k, acc) in mins.iter_mut().enumerate() {
            let prod = i32::from(sm[8 + 2 * k]) * sum32(2 * k)
                + i32::from(sm[9 + 2 * k]) * sum32(2 * k + 1);
            *acc = dmin.mul_add(prod as f32, *acc);
        }

        for (l, lane) in lanes.iter_mut().enumerate() {
            let mut sum = 0i32;
            for (s, &sc) in sm[..8].iter().enumerate() {
                let part: i32 = (32 * s + 4 * l..32 * s + 4 * l + 4)
                    .map(|i| xb.value(i) * i32::from(yb.qs[i]))
                    .sum();
                sum += i32::from(sc) * part;
            }
            *lane = d.mul_add(sum as f32, *lane);
        }
    }
    hsum8(&lanes) + ((mins[0] + mins[2]) + (mins[1] + mins[3]))
}

/// [`dot_q4k_reference`] in the order of ggml's tiled kernel ([`KQuantOrder::Tiled`]): per
/// superblock the exact integer sums `s1 = sum of sc * q * q8` and `s2 = sum of m * bsum`,
/// then `r = s1 * x.d` rounded, `r = r - x.dmin * s2` fused, and `acc = acc + r * y.d` fused.
pub fn dot_q4k_tiled_reference(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let mut acc = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let sm = xb.scales_and_mins();
        let s1: i32 = (0..8)
            .map(|s| {
                let part: i32 = (32 * s..32 * s + 32)
                    .map(|i| xb.value(i) * i32::from(yb.qs[i]))
                    .sum();
                i32::from(sm[s]) * part
            })
            .sum();
        let s2: i32 = (0..8)
            .map(|s| {
                i32::from(sm[8 + s]) * (i32::from(yb.bsums[2 * s]) + i32::from(yb.bsums[2 * s + 1]))
            })
            .sum();
        let r = s1 as f32 * f16::from_bits(xb.d).to_f32();
        let r = (-f16::from_bits(xb.dmin).to_f32()).mul_add(s2 as f32, r);
        acc = r.mul_add(yb.d, acc);
    }
    acc
}

impl QuantFormat for BlockQ4K {
    type Act = BlockQ8K;
    const NAME: &'static str = "Q4_K";
    const BLOCK_VALUES: usize = QK_K;
    const BYTES: usize = BlockQ4K::BYTES;

    fn parse_all(bytes: &[u8]) -> Vec<Self> {
        BlockQ4K::parse_all(bytes)
    }
    fn dequantize(&self, out: &mut [f32]) {
        BlockQ4K::dequantize(self, out)
    }
    fn quantize_acts(x: &[f32], out: &mut [BlockQ8K]) {
        super::quantize_row_q8k(x, out)
    }
    fn dot_reference(x: &[Self], y: &[BlockQ8K]) -> f32 {
        dot_q4k_reference(x, y)
    }
    fn dot_rows(x: &[Self], acts: &[BlockQ8K], out: &mut [f32]) {
        dot_rows_with(Isa::best(), KQuantOrder::Lanes, x, acts, out);
    }
    const HAS_TILED_ORDER: bool = true;
    fn dot_rows_tiled(x: &[Self], acts: &[BlockQ8K], out: &mut [f32]) {
        dot_rows_with(Isa::best(), KQuantOrder::Tiled, x, acts, out);
    }
}

kquant_kernels!(
    BlockQ4K,
    dot_q4k_reference,
    dot_q4k_tiled_reference,
    q4k_rows
);

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::avx2::{
        act_rows, entry_points, f16_to_f32, hsum4, hsum8, load16, load32, prefetch_ahead,
        rows_in_tiles, sum_i32x4, sum_i32x8, Madd, ScaledSum, Vnni, TILE,
    };
    use super::{BlockQ4K, BlockQ8K};

    entry_points!(BlockQ4K);

    /// `R` rows of ggml's AVX2 `ggml_vec_dot_q4_K_q8_K` (or, if `TILED`, of its tiled
    /// kernel's order), unpacking each weight superblock once for all of them, compiled for
    /// the features `$features` with `S` scaling and adding the sub-block sums.
    macro_rules! tile {
        ($name:ident, $features:literal) => {
            #[target_feature(enable = $features)]
            fn $name<S: ScaledSum, const R: usize, const TILED: bool>(
                x: &[BlockQ4K],
                acts: &[BlockQ8K],
                out: &mut [f32],
            ) {
                let rows = act_rows::<R>(acts, x.len());
                let m4 = _mm256_set1_epi8(0x0f);
                let mut acc = [_mm256_setzero_ps(); R];
                let mut acc_m = [_mm_setzero_ps(); R];
                let mut tiled = [0f32; R];
                for (b, xb) in x.iter().enumerate() {
                    prefetch_ahead(xb);
                    let xd = f16_to_f32(xb.d);
                    let xmin = f16_to_f32(xb.dmin);
                    let sm = xb.scales_and_mins();
                    let mins = _mm256_extracti128_si256::<1>(_mm256_cvtepu8_epi16(load16(&sm)));

                    let mut sumi = [_mm256_setzero_si256(); R];
                    for j in 0..4 {
                        // Each sub-block scale in all sixteen 16-bit lanes (ggml shuffles them there).
                        let scale_l = _mm256_set1_epi16(i16::from(sm[2 * j]));
                        let scale_h = _mm256_set1_epi16(i16::from(sm[2 * j + 1]));
                        let bits = load32(&xb.qs[32 * j..]);
                        let q4l = _mm256_and_si256(bits, m4);
                        let q4h = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
                        for r in 0..R {
                            let q8 = &rows[r][b].qs[64 * j..];
                            let p16l = _mm256_maddubs_epi16(q4l, load32(q8));
                            let p16h = _mm256_maddubs_epi16(q4h, load32(&q8[32..]));
                            // ggml adds the two halves' products before the running sum; integer
                            // sums are exact, so the order does not matter.
                            sumi[r] = S::add(S::add(sumi[r], scale_l, p16l), scale_h, p16h);
                        }
                    }

                    for r in 0..R {
                        let yb = &rows[r][b];
                        let d = yb.d * xd;
                        let dmin = -yb.d * xmin;
                        let q8sums = load32(&yb.bsums);
                        let q8s = _mm_hadd_epi16(
                            _mm256_castsi256_si128(q8sums),
                            _mm256_extracti128_si256::<1>(q8sums),
                        );
                        let prod = _mm_madd_epi16(mins, q8s);
                        if TILED {
                            let part = sum_i32x8(sumi[r]) as f32 * xd;
                            let part = (-xmin).mul_add(sum_i32x4(prod) as f32, part);
                            tiled[r] = part.mul_add(yb.d, tiled[r]);
                            continue;
                        }
                        acc_m[r] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m[r]);
                        acc[r] =
                            _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
                    }
                }
                for r in 0..R {
                    out[r] = if TILED {
                        tiled[r]
                    } else {
                        hsum8(acc[r]) + hsum4(acc_m[r])
                    };
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

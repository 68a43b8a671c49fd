//! Quantised block formats: ggml's weight blocks as stored in GGUF files, and the 8-bit
//! activation blocks that matrix products quantise their input rows into.

use half::f16;

/// Values per block in every format here.
pub const BLOCK: usize = 32;

/// `Q4_0`: 32 weights as 4-bit values `q - 8` times one f16 scale.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale, f16 bits.
    pub d: u16,
    /// Low nibbles are values 0..16, high nibbles values 16..32.
    pub qs: [u8; 16],
}

/// `Q4_1`: 32 weights as 4-bit values `q * d + m`.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale, f16 bits.
    pub d: u16,
    /// Minimum, f16 bits.
    pub m: u16,
    /// Low nibbles are values 0..16, high nibbles values 16..32.
    pub qs: [u8; 16],
}

/// `Q8_0`: 32 weights as signed bytes times one f16 scale.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale, f16 bits.
    pub d: u16,
    /// The values.
    pub qs: [i8; 32],
}

/// A quantised activation block (ggml's `block_q8_0` / `block_q8_1`), with the f16 fields
/// already widened to f32 (exactly: they hold f16-representable values).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct ActBlock {
    /// Scale (an f16 value).
    pub d: f32,
    /// `d * sum(qs)` rounded to f16, which `Q4_1` products need; 0 for `Q8_0` activations.
    pub s: f32,
    /// The values.
    pub qs: [i8; 32],
}

/// Parses little-endian GGUF bytes into blocks of `size` bytes each.
fn parse<T>(bytes: &[u8], size: usize, read: impl Fn(&[u8]) -> T) -> Vec<T> {
    bytes.chunks_exact(size).map(read).collect()
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl BlockQ4_0 {
    /// Bytes per block in a file.
    pub const BYTES: usize = 18;

    /// Reads blocks from GGUF bytes (a multiple of [`Self::BYTES`]).
    pub fn parse_all(bytes: &[u8]) -> Vec<Self> {
        parse(bytes, Self::BYTES, |b| Self {
            d: le16(b, 0),
            qs: b[2..18].try_into().expect("16 bytes"),
        })
    }

    /// The 32 weights.
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = f16::from_bits(self.d).to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
            out[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

impl BlockQ4_1 {
    /// Bytes per block in a file.
    pub const BYTES: usize = 20;

    /// Reads blocks from GGUF bytes (a multiple of [`Self::BYTES`]).
    pub fn parse_all(bytes: &[u8]) -> Vec<Self> {
        parse(bytes, Self::BYTES, |b| Self {
            d: le16(b, 0),
            m: le16(b, 2),
            qs: b[4..20].try_into().expect("16 bytes"),
        })
    }

    /// The 32 weights.
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = f16::from_bits(self.d).to_f32();
        let m = f16::from_bits(self.m).to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = (q & 0x0f) as f32 * d + m;
            out[j + 16] = (q >> 4) as f32 * d + m;
        }
    }
}

impl BlockQ8_0 {
    /// Bytes per block in a file.
    pub const BYTES: usize = 34;

    /// Reads blocks from GGUF bytes (a multiple of [`Self::BYTES`]).
    pub fn parse_all(bytes: &[u8]) -> Vec<Self> {
        parse(bytes, Self::BYTES, |b| {
            let mut qs = [0i8; 32];
            for (q, &byte) in qs.iter_mut().zip(&b[2..34]) {
                *q = byte as i8;
            }
            Self { d: le16(b, 0), qs }
        })
    }

    /// The 32 weights.
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = f16::from_bits(self.d).to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

/// `Q5_0`: 32 weights as 5-bit values `q - 16` times one f16 scale; bit 4 of value `i` is
/// bit `i` of `qh`.
///
/// ggml multiplies it exactly as `Q8_0` (the same `Q8_0` activations, the same signed-byte
/// products, lanes and multiply-adds), so [`Self::to_q8_0`] widens it at load and the `Q8_0`
/// kernels, packed ones included, give its products bit for bit.
#[derive(Debug, Clone, Copy)]
pub struct BlockQ5_0 {
    /// Scale, f16 bits.
    pub d: u16,
    /// The fifth bit of each value.
    pub qh: u32,
    /// Low nibbles are values 0..16, high nibbles values 16..32.
    pub qs: [u8; 16],
}

impl BlockQ5_0 {
    /// Bytes per block in a file.
    pub const BYTES: usize = 22;

    /// Reads blocks from GGUF bytes (a multiple of [`Self::BYTES`]).
    pub fn parse_all(bytes: &[u8]) -> Vec<Self> {
        parse(bytes, Self::BYTES, |b| Self {
            d: le16(b, 0),
            qh: u32::from_le_bytes(b[2..6].try_into().expect("4 bytes")),
            qs: b[6..22].try_into().expect("16 bytes"),
        })
    }

    /// Value `i` (0..32), in `-16..16`.
    pub fn value(&self, i: usize) -> i8 {
        let nibble = if i < 16 {
            self.qs[i] & 0x0f
        } else {
            self.qs[i - 16] >> 4
        };
        let high = ((self.qh >> i) & 1) as u8;
        (nibble | (high << 4)) as i8 - 16
    }

    /// The same weights as a `Q8_0` block (exactly: the values fit a byte, the scale is kept).
    pub fn to_q8_0(&self) -> BlockQ8_0 {
        BlockQ8_0 {
            d: self.d,
            qs: std::array::from_fn(|i| self.value(i)),
        }
    }

    /// The 32 weights.
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = f16::from_bits(self.d).to_f32();
        for (i, o) in out.iter_mut().enumerate().take(BLOCK) {
            *o = f32::from(self.value(i)) * d;
        }
    }
}

/// `Q5_1`: 32 weights as 5-bit values `q * d + m`, held here with its values unpacked to
/// bytes (a file's block keeps their fifth bits apart, bit `i` of a `u32` for value `i`).
///
/// ggml multiplies it exactly as `Q4_1` (the same `Q8_1` activations, the same unsigned-by-
/// signed byte products, lanes, fused multiply-adds and `summs += m * s`), so its kernels are
/// `Q4_1`'s reading bytes where those read nibbles.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ5_1 {
    /// Scale, f16 bits.
    pub d: u16,
    /// Minimum, f16 bits.
    pub m: u16,
    /// The values, 0..32.
    pub qs: [u8; 32],
}

impl BlockQ5_1 {
    /// Bytes per block in a file.
    pub const BYTES: usize = 24;

    /// Reads blocks from GGUF bytes (a multiple of [`Self::BYTES`]): scale, minimum, the
    /// fifth bits, then nibbles (low nibbles values 0..16, high nibbles 16..32).
    pub fn parse_all(bytes: &[u8]) -> Vec<Self> {
        parse(bytes, Self::BYTES, |b| {
            let qh = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
            let nibbles = &b[8..24];
            Self {
                d: le16(b, 0),
                m: le16(b, 2),
                qs: std::array::from_fn(|i| {
                    let nibble = if i < 16 {
                        nibbles[i] & 0x0f
                    } else {
                        nibbles[i - 16] >> 4
                    };
                    nibble | (((qh >> i) & 1) as u8) << 4
                }),
            }
        })
    }

    /// The 32 weights, as ggml's `dequantize_row_q5_1`: `q * d`, rounded, plus `m`.
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = f16::from_bits(self.d).to_f32();
        let m = f16::from_bits(self.m).to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = f32::from(q) * d + m;
        }
    }
}

/// Which activation format a weight type multiplies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActFormat {
    /// `Q8_0`: scale only.
    Q8_0,
    /// `Q8_1`: scale and scaled sum.
    Q8_1,
}

/// Quantises `x` (a multiple of 32 values) into activation blocks, exactly as ggml's AVX2
/// `quantize_row_q8_0` / `quantize_row_q8_1` do: scale `max|x| / 127` stored as f16, values
/// `x * (127 / max|x|)` rounded half to even, and for `Q8_1` the sum times the unrounded scale,
/// rounded to f16.
pub fn quantize_row(x: &[f32], format: ActFormat, out: &mut [ActBlock]) {
    #[cfg(target_arch = "x86_64")]
    if crate::features::has_avx2_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { quantize_row_avx2(x, format, out) };
        return;
    }
    quantize_row_portable(x, format, out);
}

/// [`quantize_row`] with AVX2, one block (four vectors) at a time as ggml's AVX2 code does:
/// the same maximum, the same `x * id` products rounded half to even, the same integer sum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_row_avx2(x: &[f32], format: ActFormat, out: &mut [ActBlock]) {
    use std::arch::x86_64::*;

    for (chunk, block) in x.chunks_exact(BLOCK).zip(out.iter_mut()) {
        let chunk: &[f32; BLOCK] = chunk.try_into().expect("a block");
        // SAFETY: `chunk` is 32 readable f32 and `block.qs` 32 writable bytes, both accessed
        // unaligned; the CPU has AVX2 (this function's target features).
        unsafe {
            // (No closures: they would be compiled without this function's target features.)
            let p = chunk.as_ptr();
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let sign = _mm256_set1_ps(-0.0);
            let mut m = _mm256_andnot_ps(sign, v[0]);
            for &vi in &v[1..] {
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, vi));
            }
            let m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let max = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
            let d = max / 127.0;
            let id = _mm256_set1_ps(if max != 0.0 { 127.0 / max } else { 0.0 });
            let mut q = [_mm256_setzero_si256(); 4];
            for (q, &vi) in q.iter_mut().zip(&v) {
                const NEAREST_EVEN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
                let rounded = _mm256_round_ps::<NEAREST_EVEN>(_mm256_mul_ps(vi, id));
                *q = _mm256_cvtps_epi32(rounded);
            }
            let total =
                _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let t4 = _mm_add_epi32(
                _mm256_extracti128_si256(total, 1),
                _mm256_castsi256_si128(total),
            );
            let t2 = _mm_add_epi32(t4, _mm_shuffle_epi32::<0b01_00_11_10>(t4));
            let sum = _mm_cvtsi128_si32(_mm_add_epi32(t2, _mm_shuffle_epi32::<0b10_11_00_01>(t2)));
            // Narrow to bytes: the packs interleave 128-bit halves, the permute restores order.
            let words = [
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            ];
            let bytes = _mm256_packs_epi16(words[0], words[1]);
            let bytes =
                _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(block.qs.as_mut_ptr().cast(), bytes);
            block.d = f16::from_f32(d).to_f32();
            block.s = match format {
                ActFormat::Q8_0 => 0.0,
                ActFormat::Q8_1 => f16::from_f32(d * sum as f32).to_f32(),
            };
        }
    }
}

#[inline(always)]
fn quantize_row_portable(x: &[f32], format: ActFormat, out: &mut [ActBlock]) {
    for (chunk, block) in x.chunks_exact(BLOCK).zip(out.iter_mut()) {
        let max = chunk.iter().fold(0f32, |m, &v| m.max(v.abs()));
        let d = max / 127.0;
        let id = if max != 0.0 { 127.0 / max } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in block.qs.iter_mut().zip(chunk) {
            let r = (v * id).round_ties_even() as i32;
            *q = r as i8;
            sum += r;
        }
        block.d = f16::from_f32(d).to_f32();
        block.s = match format {
            ActFormat::Q8_0 => 0.0,
            ActFormat::Q8_1 => f16::from_f32(d * sum as f32).to_f32(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_row_rounds_half_to_even_and_keeps_the_sum() {
        // max 127 gives id = 1: values land exactly on .5 and must round to even.
        let mut x = [0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        x[3] = 0.5;
        let mut out = [ActBlock::default()];
        quantize_row(&x, ActFormat::Q8_1, &mut out);
        assert_eq!(&out[0].qs[..4], &[127, 2, -4, 0]);
        assert_eq!(out[0].d, 1.0);
        assert_eq!(out[0].s, 125.0);
    }

    /// The AVX2 code gives the portable code's blocks bit for bit: random rows, rows with
    /// values exactly halfway between integers after scaling, and zero blocks.
    #[test]
    fn avx2_quantisation_matches_the_portable_code() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        if !crate::features::has_avx2_fma() {
            eprintln!("no AVX2 here: nothing to compare");
            return;
        }
        let mut rng = StdRng::seed_from_u64(17);
        let mut x: Vec<f32> = (0..32 * 40)
            .map(|_| rng.random_range(-4.0f32..4.0))
            .collect();
        for (i, v) in x[32..64].iter_mut().enumerate() {
            *v = if i == 0 { 127.0 } else { i as f32 - 15.5 };
        }
        x[64..96].fill(0.0);
        for format in [ActFormat::Q8_0, ActFormat::Q8_1] {
            let mut fast = vec![ActBlock::default(); 40];
            let mut portable = vec![ActBlock::default(); 40];
            quantize_row(&x, format, &mut fast);
            quantize_row_portable(&x, format, &mut portable);
            for (i, (f, p)) in fast.iter().zip(&portable).enumerate() {
                assert_eq!(
                    (f.d.to_bits(), f.s.to_bits(), f.qs),
                    (p.d.to_bits(), p.s.to_bits(), p.qs),
                    "{format:?} block {i}"
                );
            }
        }
    }

    #[test]
    fn zero_rows_quantise_to_zero() {
        let mut out = [ActBlock::default(); 2];
        quantize_row(&[0.0; 64], ActFormat::Q8_1, &mut out);
        assert!(out
            .iter()
            .all(|b| b.d == 0.0 && b.s == 0.0 && b.qs == [0; 32]));
    }

    #[test]
    fn blocks_parse_and_dequantize() {
        let mut bytes = vec![0u8; 20];
        bytes[..2].copy_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
        bytes[2..4].copy_from_slice(&f16::from_f32(-1.0).to_bits().to_le_bytes());
        bytes[4] = 0x3f; // value 0 = 15, value 16 = 3
        let block = BlockQ4_1::parse_all(&bytes)[0];
        let mut out = [0f32; 32];
        block.dequantize(&mut out);
        assert_eq!((out[0], out[16], out[1]), (6.5, 0.5, -1.0));
    }

    /// `Q5_1` values follow ggml's layout (nibbles low then high, the fifth bit from `qh`
    /// after the minimum), and dequantise as `q * d + m`.
    #[test]
    fn q5_1_parses_and_dequantizes() {
        let mut bytes = vec![0u8; BlockQ5_1::BYTES];
        bytes[..2].copy_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
        bytes[2..4].copy_from_slice(&f16::from_f32(-1.0).to_bits().to_le_bytes());
        bytes[4..8].copy_from_slice(&(1u32 << 16 | 1 << 3).to_le_bytes());
        bytes[8] = 0x2f; // value 0: nibble 15, value 16: nibble 2 (+ 16)
        bytes[11] = 0x01; // value 3: nibble 1 (+ 16), value 19: 0
        let block = BlockQ5_1::parse_all(&bytes)[0];
        assert_eq!(
            [block.qs[0], block.qs[16], block.qs[3], block.qs[19]],
            [15, 18, 17, 0]
        );
        let mut out = [0f32; 32];
        block.dequantize(&mut out);
        assert_eq!((out[0], out[16], out[3], out[19]), (6.5, 8.0, 7.5, -1.0));
    }

    /// `Q5_0` values follow ggml's layout (nibbles low then high, the fifth bit from `qh`),
    /// and the widened `Q8_0` block dequantises to the same weights.
    #[test]
    fn q5_0_parses_and_widens_exactly() {
        let mut bytes = vec![0u8; 22];
        bytes[..2].copy_from_slice(&f16::from_f32(0.25).to_bits().to_le_bytes());
        // Fifth bits: value 0 and value 17.
        bytes[2..6].copy_from_slice(&(1u32 | 1 << 17).to_le_bytes());
        bytes[6] = 0x2f; // value 0: nibble 15, value 16: nibble 2
        bytes[7] = 0x01; // value 1: nibble 1, value 17: nibble 0
        let block = BlockQ5_0::parse_all(&bytes)[0];
        assert_eq!(
            [
                block.value(0),
                block.value(16),
                block.value(1),
                block.value(17)
            ],
            [15, -14, -15, 0]
        );
        let (mut direct, mut widened) = ([0f32; 32], [0f32; 32]);
        block.dequantize(&mut direct);
        block.to_q8_0().dequantize(&mut widened);
        assert_eq!(direct, widened);
        assert_eq!(direct[0], 3.75);
    }
}

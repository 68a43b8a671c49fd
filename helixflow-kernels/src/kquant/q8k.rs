//! `Q8_K`: the activation blocks K-quant weights multiply with.

use super::QK_K;

/// 256 activations as signed bytes times one f32 scale, with the sums of each 16 values
/// (ggml's `block_q8_K`).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ8K {
    /// Scale (negative when the largest-magnitude value is positive, as in ggml).
    pub d: f32,
    /// The values, in -127..=127.
    pub qs: [i8; QK_K],
    /// `bsums[j]` is the sum of `qs[16 * j..16 * j + 16]`.
    pub bsums: [i16; QK_K / 16],
}

impl Default for BlockQ8K {
    fn default() -> Self {
        Self {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        }
    }
}

/// ggml's `nearest_int`: rounds half to even through the mantissa of `f + 1.5 * 2^23`
/// (for `|f| < 2^22`).
#[inline(always)]
fn nearest_int(f: f32) -> i32 {
    let val = f + 12_582_912.0;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Quantises `x` (a multiple of 256 values) into `Q8_K` blocks exactly as llama.cpp's x86 CPU
/// build does: its `quantize_row_q8_K` calls `quantize_row_q8_K_ref`, which scales by
/// `iscale = -127 / max` where `max` is the first value of largest magnitude, rounds with
/// [`nearest_int`], caps at 127 and stores `d = 1 / iscale`.
///
/// `quantize_row_q8_K_ref` lives in ggml-base, compiled without FMA, so the product
/// `iscale * x` is rounded before the add in `nearest_int`; here too.
pub fn quantize_row_q8k(x: &[f32], out: &mut [BlockQ8K]) {
    #[cfg(target_arch = "x86_64")]
    if crate::features::has_avx2_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { quantize_row_q8k_avx2(x, out) };
        return;
    }
    quantize_row_q8k_portable(x, out);
}

/// [`quantize_row_q8k`] compiled with AVX2, so the rounding loop vectorises (it has no fused
/// operations to change: the results are the same).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row_q8k_avx2(x: &[f32], out: &mut [BlockQ8K]) {
    quantize_row_q8k_portable(x, out);
}

#[inline(always)]
fn quantize_row_q8k_portable(x: &[f32], out: &mut [BlockQ8K]) {
    for (chunk, block) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut max = 0f32;
        let mut amax = 0f32;
        for &v in chunk {
            // Strictly greater: the first value of largest magnitude sets the sign of `d`.
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            // ggml leaves `bsums` as they were; with `d = 0` they never count.
            *block = BlockQ8K::default();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in block.qs.iter_mut().zip(chunk) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (sum, group) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
            *sum = group.iter().map(|&q| i16::from(q)).sum();
        }
        block.d = 1.0 / iscale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        let got: Vec<i32> = [2.5f32, 3.5, -2.5, -0.5, 0.49999997, 126.6, -127.0]
            .into_iter()
            .map(nearest_int)
            .collect();
        assert_eq!(got, [2, 4, -2, 0, 0, 127, -127]);
    }

    #[test]
    fn q8k_scale_comes_from_the_first_largest_value() {
        // max = -127 gives iscale = 1: halves land exactly and round to even.
        let mut x = [0f32; QK_K];
        x[0] = 2.5;
        x[1] = 3.5;
        x[2] = -0.5;
        x[20] = -127.0;
        x[21] = 127.0;
        let mut out = [BlockQ8K::default()];
        quantize_row_q8k(&x, &mut out);
        assert_eq!(out[0].d, 1.0);
        assert_eq!(&out[0].qs[..3], &[2, 4, 0]);
        assert_eq!((out[0].qs[20], out[0].qs[21]), (-127, 127));
        assert_eq!(out[0].bsums[0], 6);
        assert_eq!(out[0].bsums[1], 0);

        // A positive largest value gives a negative scale and -127 in its place.
        x[20] = 0.0;
        quantize_row_q8k(&x, &mut out);
        assert_eq!(out[0].d, -1.0);
        assert_eq!((out[0].qs[0], out[0].qs[21]), (-2, -127));
    }

    #[test]
    fn q8k_round_trips_and_sums() {
        let x: Vec<f32> = (0..2 * QK_K)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
            .collect();
        let mut out = [BlockQ8K::default(); 2];
        quantize_row_q8k(&x, &mut out);
        for (block, chunk) in out.iter().zip(x.chunks_exact(QK_K)) {
            for (&q, &v) in block.qs.iter().zip(chunk) {
                assert!((f32::from(q) * block.d - v).abs() <= block.d.abs() * 0.5001);
            }
            for (j, &sum) in block.bsums.iter().enumerate() {
                let want: i32 = block.qs[16 * j..16 * j + 16]
                    .iter()
                    .map(|&q| i32::from(q))
                    .sum();
                assert_eq!(i32::from(sum), want);
            }
            assert!(block.qs.iter().any(|&q| q.abs() == 127));
        }
    }

    #[test]
    fn q8k_zero_rows_quantise_to_zero() {
        let mut out = [BlockQ8K {
            d: 1.0,
            qs: [5; QK_K],
            bsums: [80; 16],
        }];
        quantize_row_q8k(&[0.0; QK_K], &mut out);
        assert!(out[0].d == 0.0 && out[0].qs == [0; QK_K] && out[0].bsums == [0; 16]);
    }
}

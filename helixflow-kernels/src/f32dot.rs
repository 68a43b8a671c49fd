//! F32 dot products in ggml's two orders, as built for AVX2 or AVX-512: `ggml_vec_dot_f32`'s
//! (four vectors of running sums, folded, then summed across lanes; the tail past the last
//! whole step added one product at a time) and llamafile's sgemm (one vector, one horizontal
//! sum), which ggml takes for some products over two rows or more. Small F32 products whose
//! every bit matters, such as a mixture of experts' router, use them so that routing decisions
//! near a tie fall as llama.cpp's do.

use crate::math::{hsum16, hsum8};
use crate::reference::GgmlBuild;

/// `x · y` as llamafile's sgemm in `build` adds it up: one vector of running sums, then one
/// horizontal sum. llamafile declines a width that is not whole vectors: then
/// [`dot_f32`], as ggml falls back to it.
pub fn dot_f32_sgemm(build: GgmlBuild, x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    if !n.is_multiple_of(build.lanes()) {
        return dot_f32(build, x, y);
    }
    let (x, y) = (&x[..n], &y[..n]);
    match build {
        GgmlBuild::Avx2 => hsum8(&running_sums::<8>(x, y)),
        GgmlBuild::Avx512 => hsum16(&running_sums::<16>(x, y)),
    }
}

/// `x · y` as `ggml_vec_dot_f32` in `build` adds it up.
pub fn dot_f32(build: GgmlBuild, x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let step = 4 * build.lanes();
    let whole = n / step * step;
    let mut sum = match build {
        GgmlBuild::Avx2 => {
            let acc = running_sums::<32>(&x[..whole], &y[..whole]);
            let v: [f32; 8] =
                std::array::from_fn(|l| (acc[l] + acc[16 + l]) + (acc[8 + l] + acc[24 + l]));
            // GGML_F32x8_REDUCE: the two halves, then two horizontal adds.
            let t: [f32; 4] = std::array::from_fn(|l| v[l] + v[l + 4]);
            (t[0] + t[1]) + (t[2] + t[3])
        }
        GgmlBuild::Avx512 => {
            let acc = running_sums::<64>(&x[..whole], &y[..whole]);
            let v: [f32; 16] =
                std::array::from_fn(|l| (acc[l] + acc[32 + l]) + (acc[16 + l] + acc[48 + l]));
            hsum16(&v)
        }
    };
    for (a, b) in x[whole..].iter().zip(&y[whole..]) {
        let product = a * b; // rounded, then added: ggml's C++ does not contract these
        sum += product;
    }
    sum
}

/// `L` running sums, lane `l` taking every `L`th product with a fused multiply-add.
fn running_sums<const L: usize>(x: &[f32], y: &[f32]) -> [f32; L] {
    #[cfg(target_arch = "x86_64")]
    if crate::features::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { running_sums_fma::<L>(x, y) };
    }
    running_sums_portable::<L>(x, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn running_sums_fma<const L: usize>(x: &[f32], y: &[f32]) -> [f32; L] {
    running_sums_portable::<L>(x, y)
}

#[inline(always)]
fn running_sums_portable<const L: usize>(x: &[f32], y: &[f32]) -> [f32; L] {
    let mut acc = [0f32; L];
    for (xs, ys) in x.chunks_exact(L).zip(y.chunks_exact(L)) {
        for l in 0..L {
            acc[l] = xs[l].mul_add(ys[l], acc[l]);
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                    / 16_777_216.0
                    - 0.5
            })
            .collect()
    }

    /// The orders written out one lane at a time, as ggml's vectors run them.
    fn by_lanes(lanes: usize, accumulators: usize, x: &[f32], y: &[f32]) -> Vec<f32> {
        let width = lanes * accumulators;
        let mut acc = vec![0f32; width];
        for (xs, ys) in x.chunks_exact(width).zip(y.chunks_exact(width)) {
            for m in 0..width {
                acc[m] = xs[m].mul_add(ys[m], acc[m]);
            }
        }
        acc
    }

    #[test]
    fn the_lanes_fold_as_ggml_folds_them() {
        let (x, y) = (values(256, 1), values(256, 2));
        // AVX-512: four sixteen-lane vectors folded 0+2, 1+3, then 0+1, then reduced.
        let a = by_lanes(16, 4, &x, &y);
        let v: Vec<f32> = (0..16)
            .map(|l| (a[l] + a[32 + l]) + (a[16 + l] + a[48 + l]))
            .collect();
        let want = hsum16(&v.try_into().unwrap());
        assert_eq!(dot_f32(GgmlBuild::Avx512, &x, &y).to_bits(), want.to_bits());
        // AVX2: four eight-lane vectors, then the halves and two horizontal adds.
        let a = by_lanes(8, 4, &x, &y);
        let v: Vec<f32> = (0..8)
            .map(|l| (a[l] + a[16 + l]) + (a[8 + l] + a[24 + l]))
            .collect();
        let t: Vec<f32> = (0..4).map(|l| v[l] + v[l + 4]).collect();
        let want = (t[0] + t[1]) + (t[2] + t[3]);
        assert_eq!(dot_f32(GgmlBuild::Avx2, &x, &y).to_bits(), want.to_bits());
        // The builds differ in their last bits somewhere, or this test would prove nothing.
        let differ = (0..64).any(|s| {
            let (x, y) = (values(256, 3 * s), values(256, 3 * s + 1));
            dot_f32(GgmlBuild::Avx512, &x, &y) != dot_f32(GgmlBuild::Avx2, &x, &y)
        });
        assert!(differ);
    }

    #[test]
    fn sgemm_keeps_one_vector_and_declines_ragged_widths() {
        let (x, y) = (values(256, 7), values(256, 8));
        let a = by_lanes(16, 1, &x, &y);
        let want = hsum16(&a.try_into().unwrap());
        assert_eq!(
            dot_f32_sgemm(GgmlBuild::Avx512, &x, &y).to_bits(),
            want.to_bits()
        );
        let a = by_lanes(8, 1, &x, &y);
        let want = hsum8(&a.try_into().unwrap());
        assert_eq!(
            dot_f32_sgemm(GgmlBuild::Avx2, &x, &y).to_bits(),
            want.to_bits()
        );
        let (x, y) = (&x[..72], &y[..72]);
        assert_eq!(
            dot_f32_sgemm(GgmlBuild::Avx512, x, y).to_bits(),
            dot_f32(GgmlBuild::Avx512, x, y).to_bits()
        );
    }

    #[test]
    fn the_tail_adds_one_rounded_product_at_a_time() {
        let (x, y) = (values(72, 5), values(72, 6));
        let head = dot_f32(GgmlBuild::Avx512, &x[..64], &y[..64]);
        let want = x[64..]
            .iter()
            .zip(&y[64..])
            .fold(head, |s, (a, b)| s + a * b);
        assert_eq!(dot_f32(GgmlBuild::Avx512, &x, &y).to_bits(), want.to_bits());
    }
}

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::dot::{dot_blocks, dot_scalar, WeightBlock};
use crate::quant::ActFormat;
use crate::test_support::{activations, scale};

fn q4_0(rng: &mut StdRng) -> BlockQ4_0 {
    BlockQ4_0 {
        d: scale(rng),
        qs: rng.random(),
    }
}

fn q4_1(rng: &mut StdRng) -> BlockQ4_1 {
    BlockQ4_1 {
        d: scale(rng),
        m: scale(rng),
        qs: rng.random(),
    }
}

fn q5_1(rng: &mut StdRng) -> BlockQ5_1 {
    BlockQ5_1 {
        d: scale(rng),
        m: scale(rng),
        qs: std::array::from_fn(|_| rng.random_range(0u8..32)),
    }
}

fn q8_0(rng: &mut StdRng) -> BlockQ8_0 {
    // The full signed range, -128 included: a GGUF file may hold it.
    BlockQ8_0 {
        d: scale(rng),
        qs: rng.random(),
    }
}

/// Packing keeps every row's blocks: unpacking gives them back, padding rows are zero, and
/// dequantised rows are the GGUF blocks' own.
fn round_trip<P: PackedFormat>(make: impl Fn(&mut StdRng) -> P::Block)
where
    P::Block: std::fmt::Debug,
{
    let mut rng = StdRng::seed_from_u64(5);
    let (rows, nb) = (11, 3);
    let blocks: Vec<P::Block> = (0..rows * nb).map(|_| make(&mut rng)).collect();
    let packed = pack::<P>(&blocks, nb);
    assert_eq!(packed.len(), 2 * nb, "two groups, the second padded");
    for row in 0..16 {
        for b in 0..nb {
            let got = packed[row / ROWS * nb + b].unpack(row % ROWS);
            let mut values = [0f32; BLOCK];
            got.dequantize(&mut values);
            if row < rows {
                let mut want = [0f32; BLOCK];
                blocks[row * nb + b].dequantize(&mut want);
                assert_eq!(values, want, "row {row} block {b}");
            } else {
                assert!(values.iter().all(|&v| v == 0.0), "padding row {row}");
            }
        }
        if row < rows {
            let mut got = vec![0f32; nb * BLOCK];
            dequantize_row(&packed, nb, row, &mut got);
            let mut want = vec![0f32; nb * BLOCK];
            for (b, o) in want.chunks_exact_mut(BLOCK).enumerate() {
                blocks[row * nb + b].dequantize(o);
            }
            assert_eq!(got, want, "dequantize_row {row}");
        }
    }
}

#[test]
fn packing_round_trips() {
    round_trip::<PackedQ4_0>(q4_0);
    round_trip::<PackedQ4_1>(q4_1);
    round_trip::<PackedQ5_1>(q5_1);
    round_trip::<PackedQ8_0>(q8_0);
}

/// Every instruction set's kernels give the row-at-a-time reference's results (ggml's order,
/// or block order) bit for bit, for odd block counts, padded groups and every tile remainder,
/// written at the stride asked and nowhere else; and the two orders agree closely.
fn check<P: PackedFormat>(make: impl Fn(&mut StdRng) -> P::Block, format: ActFormat) {
    let mut rng = StdRng::seed_from_u64(9);
    for nb in [1, 2, 5, 18, 48] {
        for rows in [3, 8, 21] {
            let blocks: Vec<P::Block> = (0..rows * nb).map(|_| make(&mut rng)).collect();
            let packed = pack::<P>(&blocks, nb);
            let width = rows.div_ceil(ROWS) * ROWS;
            for n in (1..=9).chain([16, 19]) {
                let acts = activations(&mut rng, n, nb, format);
                let ld = width + 5;
                let orders = [Accumulation::Ggml, Accumulation::Blocks];
                for (isa, order) in Isa::supported()
                    .into_iter()
                    .flat_map(|i| orders.map(|o| (i, o)))
                {
                    let mut got = vec![f32::NAN; n * ld];
                    matrix_with(isa, order, &packed, nb, &acts, &mut got, ld);
                    for r in 0..n {
                        let y = &acts[r * nb..(r + 1) * nb];
                        for row in 0..rows {
                            let row_blocks = &blocks[row * nb..(row + 1) * nb];
                            let want = match order {
                                Accumulation::Ggml => dot_scalar(row_blocks, y),
                                Accumulation::Blocks => dot_blocks(row_blocks, y),
                            };
                            assert_eq!(
                                got[r * ld + row].to_bits(),
                                want.to_bits(),
                                "{isa:?} {order:?} nb {nb} rows {rows} n {n}: row {row} act {r}"
                            );
                            let ggml = dot_scalar(row_blocks, y);
                            let size: f32 = row_blocks
                                .iter()
                                .zip(y)
                                .map(|(w, y)| (w.scale() * y.d).abs() * 32.0 * 127.0 * 15.0)
                                .sum();
                            assert!(
                                (want - ggml).abs() <= 1e-5 * size.max(f32::MIN_POSITIVE),
                                "block order {want} vs ggml's {ggml}"
                            );
                        }
                        assert!(
                            got[r * ld + width..(r + 1) * ld].iter().all(|v| v.is_nan()),
                            "{isa:?} wrote past the group's outputs"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn q4_0_kernels_match_the_reference() {
    check::<PackedQ4_0>(q4_0, ActFormat::Q8_0);
}

#[test]
fn q4_1_kernels_match_the_reference() {
    check::<PackedQ4_1>(q4_1, ActFormat::Q8_1);
}

#[test]
fn q5_1_kernels_match_the_reference() {
    check::<PackedQ5_1>(q5_1, ActFormat::Q8_1);
}

#[test]
fn q8_0_kernels_match_the_reference() {
    check::<PackedQ8_0>(q8_0, ActFormat::Q8_0);
}

#[test]
#[should_panic(expected = "packed matrix")]
fn an_output_too_short_for_the_stride_is_refused() {
    let blocks = vec![BlockQ4_0 { d: 0, qs: [0; 16] }; 8];
    let packed = pack::<PackedQ4_0>(&blocks, 1);
    let acts = vec![ActBlock::default(); 2];
    let mut out = vec![0f32; 8 + 7];
    matrix(&packed, 1, &acts, &mut out, 8);
}

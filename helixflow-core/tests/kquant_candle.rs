//! Our `Q4_K`, `Q5_K` and `Q6_K` kernels against candle's on the same bytes: candle quantises random
//! matrices into a GGUF file, which [`WeightMatrix`] loads. Dequantising must agree bit for
//! bit (both follow ggml's `dequantize_row_*`); products must agree closely: candle rounds
//! halfway activations away from zero where ggml rounds them to even, and off x86 it sums in
//! other orders. (On x86 with AVX2 candle's kernels are ports of ggml's, and the products of
//! these random inputs come out identical.)

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use helixflow_core::cpu::WeightMatrix;
use helixflow_core::gguf::GgufFile;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Rows not a multiple of the matmul's rows per task; two superblocks per row.
const ROWS: usize = 40;
const COLS: usize = 512;

fn random(rng: &mut StdRng, len: usize, scale: f32) -> Vec<f32> {
    (0..len)
        .map(|_| rng.random_range(-1.0f32..1.0) * scale)
        .collect()
}

/// A random `[ROWS, COLS]` matrix quantised to `dtype` by candle, and the same written to a
/// GGUF file in `dir` and loaded as a [`WeightMatrix`].
fn matrix(dir: &std::path::Path, dtype: GgmlDType) -> (QTensor, WeightMatrix) {
    let mut rng = StdRng::seed_from_u64(23);
    let data = random(&mut rng, ROWS * COLS, 0.05);
    let t = Tensor::from_vec(data, (ROWS, COLS), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, dtype).unwrap();
    let path = dir.join(format!("{dtype:?}.gguf"));
    let mut file = std::fs::File::create(&path).unwrap();
    gguf_file::write(&mut file, &[], &[("w", &q)]).unwrap();
    drop(file);
    let m = WeightMatrix::from_gguf(&GgufFile::open(&path).unwrap(), "w").unwrap();
    (q, m)
}

#[test]
fn kquant_dequantize_matches_candle_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in [GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K] {
        let (q, m) = matrix(dir.path(), dtype);
        assert!(
            format!("{m:?}").contains("_K"),
            "{dtype:?} went to candle: {m:?}"
        );
        let want = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut row = vec![0f32; COLS];
        for (r, want) in want.chunks_exact(COLS).enumerate() {
            assert!(m.dequantize_row(r, &mut row));
            for (c, (got, want)) in row.iter().zip(want).enumerate() {
                assert_eq!(got.to_bits(), want.to_bits(), "{dtype:?} [{r}, {c}]");
            }
        }
    }
}

#[test]
fn kquant_matmul_is_close_to_candle() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(29);
    for dtype in [GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K] {
        let (q, m) = matrix(dir.path(), dtype);
        let candle = QMatMul::from_qtensor(q).unwrap();
        for n in [1, 3, 6] {
            let input = random(&mut rng, n * COLS, 2.0);
            let mut ours = vec![0f32; n * ROWS];
            m.matmul(&input, &mut ours).unwrap();
            let x = Tensor::from_slice(&input, (n, COLS), &Device::Cpu).unwrap();
            let theirs = candle
                .forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let diff: f32 = ours.iter().zip(&theirs).map(|(a, b)| (a - b).powi(2)).sum();
            let norm: f32 = theirs.iter().map(|b| b * b).sum();
            let err = (diff / norm).sqrt();
            eprintln!("{dtype:?} n {n}: relative error {err:.2e}");
            assert!(err < 1e-5, "{dtype:?} n {n}: relative error {err}");
        }
    }
}

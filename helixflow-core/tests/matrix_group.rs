//! A [`MatrixGroup`] (a layer's query, key and value projections, or its gate and up) gives
//! each part exactly the product the part gives on its own, one activation row at a time,
//! stacked or not, for one and for several activation rows; groups that cannot stack still
//! work, and bad shapes are errors. A [`GatedProjection`] (gate, up and SwiGLU, fused where
//! the formats allow) gives exactly what the two products and `math::swiglu` give apart.

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use helixflow_core::cpu::{math, GatedProjection, MatrixGroup, WeightMatrix};
use helixflow_core::gguf::GgufFile;
use helixflow_kernels::packed;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const COLS: usize = 256;

/// Random matrices of `rows` rows each, quantised to `dtypes` by candle, written to one GGUF
/// file and loaded back (twice: once to group, once to compare with).
fn matrices(dir: &std::path::Path, parts: &[(usize, GgmlDType)]) -> [Vec<WeightMatrix>; 2] {
    let mut rng = StdRng::seed_from_u64(41);
    let tensors: Vec<(String, QTensor)> = parts
        .iter()
        .enumerate()
        .map(|(i, &(rows, dtype))| {
            let data: Vec<f32> = (0..rows * COLS)
                .map(|_| rng.random_range(-0.1f32..0.1))
                .collect();
            let t = Tensor::from_vec(data, (rows, COLS), &Device::Cpu).unwrap();
            (format!("w{i}"), QTensor::quantize(&t, dtype).unwrap())
        })
        .collect();
    let path = dir.join("group.gguf");
    let mut file = std::fs::File::create(&path).unwrap();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    gguf_file::write(&mut file, &[], &refs).unwrap();
    drop(file);
    let gguf = GgufFile::open(&path).unwrap();
    let load = || {
        (0..parts.len())
            .map(|i| WeightMatrix::from_gguf(&gguf, &format!("w{i}")).unwrap())
            .collect()
    };
    [load(), load()]
}

#[test]
fn a_group_gives_each_part_its_own_product_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(43);
    let cases: [(&[(usize, GgmlDType)], bool); 4] = [
        // Rows that are not multiples of the matmul's rows per task.
        (
            &[
                (72, GgmlDType::Q4_1),
                (24, GgmlDType::Q4_1),
                (24, GgmlDType::Q4_1),
            ],
            true,
        ),
        (&[(40, GgmlDType::Q8_0), (33, GgmlDType::Q8_0)], true),
        (&[(40, GgmlDType::Q6K), (8, GgmlDType::Q6K)], true),
        // Mixed formats run part by part.
        (&[(40, GgmlDType::Q4_0), (16, GgmlDType::Q8_0)], false),
    ];
    for (parts, stacks) in cases {
        let [grouped, alone] = matrices(dir.path(), parts);
        let group = MatrixGroup::new(grouped).unwrap();
        assert_eq!(group.is_stacked(), stacks, "{parts:?}");
        for n in [1, 2, 9] {
            let input: Vec<f32> = (0..n * COLS)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect();
            let mut outs: Vec<Vec<f32>> = alone.iter().map(|m| vec![0.0; n * m.rows()]).collect();
            let mut slices: Vec<&mut [f32]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
            group.matmul(&input, &mut slices).unwrap();
            for (i, (m, got)) in alone.iter().zip(&outs).enumerate() {
                // The reference: each activation row on its own (one row needs no transposing).
                let mut want = vec![0f32; n * m.rows()];
                for (x, o) in input
                    .chunks_exact(COLS)
                    .zip(want.chunks_exact_mut(m.rows()))
                {
                    m.matmul(x, o).unwrap();
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(got), bits(&want), "{parts:?} part {i}, {n} rows");
            }
        }
    }
}

#[test]
fn a_group_refuses_outputs_that_do_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let [grouped, _] = matrices(dir.path(), &[(32, GgmlDType::Q4_1), (32, GgmlDType::Q4_1)]);
    let group = MatrixGroup::new(grouped).unwrap();
    let input = vec![0.5f32; 2 * COLS];
    let (mut a, mut b) = (vec![0f32; 64], vec![0f32; 64]);
    group.matmul(&input, &mut [&mut a, &mut b]).unwrap();
    // A part's output one row short, one output missing, an input not a whole row.
    let mut short = vec![0f32; 62];
    assert!(group.matmul(&input, &mut [&mut a, &mut short]).is_err());
    assert!(group.matmul(&input, &mut [&mut a]).is_err());
    assert!(group.matmul(&input[1..], &mut [&mut a, &mut b]).is_err());
    // Matrices of different input widths cannot share an input.
    let narrow = dir.path().join("narrow");
    std::fs::create_dir(&narrow).unwrap();
    let [mut wide, _] = matrices(dir.path(), &[(32, GgmlDType::Q4_1)]);
    let t = Tensor::zeros((8, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, GgmlDType::Q4_1).unwrap();
    let path = narrow.join("n.gguf");
    gguf_file::write(
        &mut std::fs::File::create(&path).unwrap(),
        &[],
        &[("n", &q)],
    )
    .unwrap();
    wide.push(WeightMatrix::from_gguf(&GgufFile::open(&path).unwrap(), "n").unwrap());
    assert!(MatrixGroup::new(wide).is_err());
}

#[test]
fn a_gated_projection_gives_swiglu_of_its_products_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(47);
    // (rows of each matrix, format, whether the packed kernels can fuse them)
    let cases = [
        (64, GgmlDType::Q4_1, true),
        (48, GgmlDType::Q8_0, true),
        (16, GgmlDType::Q4_0, true),
        // Not whole units of sixteen rows, and a format that is never packed.
        (40, GgmlDType::Q4_1, false),
        (32, GgmlDType::Q6K, false),
    ];
    for (rows, dtype, fusable) in cases {
        let [paired, alone] = matrices(dir.path(), &[(rows, dtype), (rows, dtype)]);
        let mut paired = paired.into_iter();
        let (gate, up) = (paired.next().unwrap(), paired.next().unwrap());
        let projection = GatedProjection::new(gate, up).unwrap();
        assert_eq!(projection.rows(), rows);
        assert_eq!(
            projection.is_fused(),
            fusable && packed::is_preferred(),
            "{dtype:?} x{rows}"
        );
        for n in [1, 2, 9, 16] {
            let input: Vec<f32> = (0..n * COLS)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect();
            let mut got = vec![f32::NAN; n * rows];
            projection.forward(&input, &mut got).unwrap();
            let mut want = vec![0f32; n * rows];
            let mut up = vec![0f32; rows];
            for (x, o) in input.chunks_exact(COLS).zip(want.chunks_exact_mut(rows)) {
                alone[0].matmul(x, o).unwrap();
                alone[1].matmul(x, &mut up).unwrap();
                math::swiglu(o, &up);
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{dtype:?} x{rows}, {n} rows");
        }
        // Outputs or inputs that do not fit are errors.
        let input = vec![0.5f32; 2 * COLS];
        assert!(projection
            .forward(&input, &mut vec![0.0; 2 * rows - 1])
            .is_err());
        assert!(projection
            .forward(&input[1..], &mut vec![0.0; 2 * rows])
            .is_err());
    }
    // A gate and an up projection of different shapes do not pair.
    let [mut odd, _] = matrices(dir.path(), &[(32, GgmlDType::Q4_1), (48, GgmlDType::Q4_1)]);
    let up = odd.pop().unwrap();
    assert!(GatedProjection::new(odd.pop().unwrap(), up).is_err());
}

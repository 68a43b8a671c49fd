//! Single-threaded throughput of the quantised dot-product kernels on the matrix shapes of
//! SmolLM2-135M (hidden 576, MLP 1536), for one activation row (decode) and batches of 4, 16
//! and 64 rows (batched decode, prefill). Throughput is in weight×activation products.
//!
//!   cargo bench -p helixflow-benches --bench kernels [-- FILTER]
//!
//! `Q4_K` and `Q6_K` are measured on the down projection only (their 256-value superblocks do
//! not divide 576). Each legacy format is measured twice: in the GGUF layout with the row-at-a-time kernels
//! (group `Q4_1`), and packed eight rows at a time with the packed kernels (`Q4_1 packed`, the
//! layout x86 CPUs with AVX2 load); both give the same numbers. The packed formats are also
//! measured in block order (`Q4_1 packed blocks`, `HELIXFLOW_BLOCK_PRODUCTS=1`).
//!
//! `Q8_0 packed streamed` (and `Q4_1`) time a matrix the shape of the output projection,
//! too big for the caches, split over one and two threads as the engine splits it.
//!
//! `HELIXFLOW_NO_AVX512=1` measures the AVX2 kernels on a CPU with AVX-512 VNNI.

use criterion::{BenchmarkId, Criterion, Throughput};
use half::f16;
use helixflow_kernels::format::QuantFormat;
use helixflow_kernels::kquant::{BlockQ4K, BlockQ6K};
use helixflow_kernels::packed::{
    self, Accumulation, PackedFormat, PackedQ4_0, PackedQ4_1, PackedQ8_0,
};
use helixflow_kernels::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `(rows, cols)` of the weight matrices: the MLP's up projection and its down projection.
const SHAPES: [(usize, usize); 2] = [(1536, 576), (576, 1536)];
const BATCHES: [usize; 4] = [1, 4, 16, 64];

/// Random GGUF bytes for `blocks` blocks of `W`, with small f16 scales in the scale fields.
fn random_blocks<W: QuantFormat>(rng: &mut StdRng, blocks: usize) -> Vec<W> {
    let mut bytes: Vec<u8> = (0..blocks * W::BYTES).map(|_| rng.random()).collect();
    // Where the f16 scales are: every legacy format starts with its scale (Q4_1 with a second
    // f16, the min, as Q4_K with its two superblock scales); Q6_K's ends the block.
    let scales: &[usize] = match W::NAME {
        "Q4_1" | "Q4_K" => &[0, 2],
        "Q6_K" => &[208],
        _ => &[0],
    };
    for block in bytes.chunks_exact_mut(W::BYTES) {
        let scale = f16::from_f32(rng.random_range(0.001f32..0.05)).to_bits();
        for &at in scales {
            block[at..at + 2].copy_from_slice(&scale.to_le_bytes());
        }
    }
    W::parse_all(&bytes)
}

fn bench_format<W: QuantFormat>(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let mut group = c.benchmark_group(W::NAME);
    for (rows, cols) in SHAPES {
        if !cols.is_multiple_of(W::BLOCK_VALUES) {
            continue;
        }
        let nb = cols / W::BLOCK_VALUES;
        let weights: Vec<W> = random_blocks(&mut rng, rows * nb);
        for n in BATCHES {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
            let mut acts = vec![W::Act::default(); n * nb];
            for (row, blocks) in x.chunks_exact(cols).zip(acts.chunks_exact_mut(nb)) {
                W::quantize_acts(row, blocks);
            }
            let mut out = vec![0f32; rows * n];
            group.throughput(Throughput::Elements((rows * cols * n) as u64));
            group.bench_function(BenchmarkId::new(format!("{rows}x{cols}"), n), |b| {
                b.iter(|| {
                    W::dot_matrix(&weights, nb, &acts, &mut out);
                    std::hint::black_box(&out);
                })
            });
        }
    }
    group.finish();
}

fn bench_packed<P: PackedFormat>(c: &mut Criterion, order: Accumulation) {
    let mut rng = StdRng::seed_from_u64(1);
    let name = match order {
        Accumulation::Ggml => format!("{} packed", P::Block::NAME),
        Accumulation::Blocks => format!("{} packed blocks", P::Block::NAME),
    };
    let mut group = c.benchmark_group(name);
    for (rows, cols) in SHAPES {
        let nb = cols / P::Block::BLOCK_VALUES;
        let weights = packed::pack::<P>(&random_blocks::<P::Block>(&mut rng, rows * nb), nb);
        for n in BATCHES {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
            let mut acts = vec![Default::default(); n * nb];
            for (row, blocks) in x.chunks_exact(cols).zip(acts.chunks_exact_mut(nb)) {
                P::Block::quantize_acts(row, blocks);
            }
            let mut out = vec![0f32; rows * n];
            group.throughput(Throughput::Elements((rows * cols * n) as u64));
            group.bench_function(BenchmarkId::new(format!("{rows}x{cols}"), n), |b| {
                b.iter(|| {
                    packed::matrix_in(order, &weights, nb, &acts, &mut out, rows);
                    std::hint::black_box(&out);
                })
            });
        }
    }
    group.finish();
}

fn kernels(c: &mut Criterion) {
    for order in [Accumulation::Ggml, Accumulation::Blocks] {
        bench_packed::<PackedQ4_1>(c, order);
        bench_packed::<PackedQ4_0>(c, order);
        bench_packed::<PackedQ8_0>(c, order);
    }
    bench_streamed::<PackedQ8_0>(c);
    bench_streamed::<PackedQ4_1>(c);
    bench_format::<BlockQ4_1>(c);
    bench_format::<BlockQ4_0>(c);
    bench_format::<BlockQ8_0>(c);
    bench_format::<BlockQ4K>(c);
    bench_format::<BlockQ6K>(c);
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .configure_from_args();
    kernels(&mut criterion);
    criterion.final_summary();
}

/// Products over a matrix the shape of the default model's output projection (49152×576,
/// 30 MB as `Q8_0`, beyond the caches: streamed from memory, as every weight is in a decode
/// step), times 16 activation rows, on a pool of one and two threads in tasks of 32 and 256
/// rows (helixflow-core takes the larger for such a matrix).
fn bench_streamed<P: PackedFormat>(c: &mut Criterion) {
    use helixflow_kernels::pool::Pool;
    let mut rng = StdRng::seed_from_u64(1);
    let (rows, cols, n) = (49152, 576, 16);
    let nb = cols / P::Block::BLOCK_VALUES;
    let weights = packed::pack::<P>(&random_blocks::<P::Block>(&mut rng, rows * nb), nb);
    let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
    let mut acts = vec![Default::default(); n * nb];
    for (row, blocks) in x.chunks_exact(cols).zip(acts.chunks_exact_mut(nb)) {
        P::Block::quantize_acts(row, blocks);
    }
    let mut group = c.benchmark_group(format!("{} packed streamed", P::Block::NAME));
    group.throughput(Throughput::Elements((rows * cols * n) as u64));
    for threads in [1, 2] {
        let pool = Pool::new(threads);
        for task_rows in [32, 256] {
            let id = BenchmarkId::new(format!("{rows}x{cols}/{n}/threads {threads}"), task_rows);
            group.bench_function(id, |b| {
                b.iter(|| {
                    pool.for_each(rows / task_rows, |task| {
                        let groups = task_rows / packed::ROWS;
                        let w = &weights[task * groups * nb..(task + 1) * groups * nb];
                        let mut out = vec![0f32; task_rows * n];
                        packed::matrix_in(Accumulation::Ggml, w, nb, &acts, &mut out, task_rows);
                        std::hint::black_box(&out);
                    });
                })
            });
        }
    }
    group.finish();
}

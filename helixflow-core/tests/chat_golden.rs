//! The whole chat path on the default model against llama.cpp's reference outputs: messages →
//! the GGUF's own chat template → tokens → greedy decoding → text.

mod common;

use std::sync::OnceLock;

use common::{greedy_path, ids};
use helixflow_core::chat_model::ChatModel;
use helixflow_core::chat_template::{messages_from_openai, ChatMessage};
use helixflow_core::completion::FinishReason;
use helixflow_core::generation::GenerationParams;

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

/// Log-probabilities, normalised in f64 so that the sum over the vocabulary adds no error.
fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let lse = f64::from(max) + sum.ln();
    logits
        .iter()
        .map(|&l| (f64::from(l) - lse) as f32)
        .collect()
}

/// Our kernels reproduce llama.cpp's arithmetic, so greedy decoding gives exactly its tokens.
#[test]
fn greedy_decoding_reproduces_llama_cpp_exactly() {
    for case in cases() {
        let prompt = ids(&case["prompt_token_ids"]);
        let expected = ids(&case["greedy_completion_token_ids"]);
        let (path, _) = greedy_path(model(), &prompt, expected.len());
        assert_eq!(path, expected, "case {:?}", case["messages"]);
    }
}

/// How far a first-step logprob may be from llama.cpp's (the bound).
const LOGPROB_TOLERANCE: f32 = 1e-2;

#[test]
fn first_step_logprobs_match_llama_cpp() {
    for case in cases() {
        let prompt = ids(&case["prompt_token_ids"]);
        let (_, logits) = greedy_path(model(), &prompt, 1);
        let lp = log_softmax(&logits);
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

/// Greedy chat through the public API, from messages: the reference text, usage, and a
/// finish reason that says whether the end-of-turn token came before `max_tokens`.
#[test]
fn greedy_chat_through_the_api() {
    let chat = model();
    for case in cases() {
        let prompt = ids(&case["prompt_token_ids"]);
        let expected = ids(&case["greedy_completion_token_ids"]);
        let completion = chat
            .chat(&messages(&case), &GenerationParams::greedy(expected.len()))
            .unwrap();
        let choice = &completion.choices[0];
        assert_eq!(
            choice.message.content,
            case["greedy_completion_text"].as_str().unwrap()
        );
        assert_eq!(completion.usage.prompt_tokens, prompt.len());
        assert_eq!(completion.usage.completion_tokens, expected.len());
        let ended = chat
            .tokenizer()
            .end_of_turn_ids()
            .contains(expected.last().unwrap());
        let want = if ended {
            FinishReason::Stop
        } else {
            FinishReason::Length
        };
        assert_eq!(choice.finish_reason, want);
    }
}

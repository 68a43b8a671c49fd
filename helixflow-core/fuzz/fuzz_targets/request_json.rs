//! Any request body: OpenAI messages and generation options are parsed, defaulted and
//! validated into errors or parameters, never a crash; the numbers a client sends never
//! wrap (a token budget is never more than the context holds).
#![no_main]

use helixflow_core::chat_template::messages_from_openai;
use helixflow_core::request::GenerationOptions;
use libfuzzer_sys::fuzz_target;

const VOCAB: usize = 49152;
const CONTEXT: usize = 8192;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Some(messages) = body.get("messages") {
        let _ = messages_from_openai(messages);
    }
    let Ok(options) = serde_json::from_value::<GenerationOptions>(body.clone()) else {
        return;
    };
    let logprobs = body.get("logprobs").and_then(|v| v.as_bool()).unwrap_or(false);
    let top = body
        .get("top_logprobs")
        .and_then(|v| v.as_u64())
        .map(|v| v as usize);
    let Ok(params) = options.chat_params(logprobs, top) else {
        return;
    };
    if params.validate(VOCAB).is_err() {
        return;
    }
    for prompt_len in [1, 100, CONTEXT - 1, CONTEXT, CONTEXT + 1, usize::MAX] {
        if let Ok(budget) = params.token_budget(prompt_len, CONTEXT) {
            assert!(prompt_len + budget <= CONTEXT, "{prompt_len} + {budget}");
        }
    }
});

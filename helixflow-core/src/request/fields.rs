//! Which request fields of the OpenAI API HelixFlow honours. A client that sends a field we
//! would drop (`audio`, `store: true`, …) gets a 400 naming it instead of an answer
//! that silently lacks what it asked for; a field OpenAI does not define is refused too, as
//! OpenAI refuses it ("Unrecognized request argument").

use serde_json::{Map, Value};

use crate::{Error, Result};

/// An OpenAI endpoint whose body [`check_fields`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/completions`.
    Completions,
    /// `POST /v1/embeddings`.
    Embeddings,
}

/// What HelixFlow does with a field.
#[derive(Clone, Copy)]
enum Support {
    /// Honoured (its values are checked where it is read).
    Honoured,
    /// Accepted with the value that asks for nothing; any other is refused with the reason.
    OnlyDefault(fn(&Value) -> bool, &'static str),
    /// Defined by OpenAI, not supported by HelixFlow.
    Refused(&'static str),
}

use Support::{Honoured, OnlyDefault, Refused};

/// The fields that every generation endpoint shares.
const GENERATION: &[(&str, Support)] = &[
    ("model", Honoured),
    ("stream", Honoured),
    ("stream_options", Honoured),
    ("n", Honoured),
    ("seed", Honoured),
    ("stop", Honoured),
    ("max_tokens", Honoured),
    ("temperature", Honoured),
    ("top_p", Honoured),
    ("frequency_penalty", Honoured),
    ("presence_penalty", Honoured),
    ("logit_bias", Honoured),
    ("logprobs", Honoured),
    // Identifies the end user for the operator's abuse monitoring: nothing to do with the
    // answer, and recorded nowhere by HelixFlow, as it asks.
    ("user", Honoured),
    // Extensions vLLM and llama.cpp's server take.
    ("top_k", Honoured),
    ("min_p", Honoured),
    ("repetition_penalty", Honoured),
    ("ignore_eos", Honoured),
    ("structured_outputs", Honoured),
    // OpenAI's chat field; vLLM takes it on completions too.
    ("response_format", Honoured),
];

const CHAT: &[(&str, Support)] = &[
    ("messages", Honoured),
    ("max_completion_tokens", Honoured),
    ("top_logprobs", Honoured),
    ("metadata", Honoured), // labels for stored completions; HelixFlow stores none
    // Hints for OpenAI's own caches and safety routing; prefix caching here is automatic.
    ("prompt_cache_key", Honoured),
    ("safety_identifier", Honoured),
    (
        "store",
        OnlyDefault(is_false, "stored completions are not supported"),
    ),
    (
        "modalities",
        OnlyDefault(is_text_only, "only the text modality is supported"),
    ),
    (
        "service_tier",
        OnlyDefault(is_auto_or_default, "service tiers are not supported"),
    ),
    ("tools", Honoured),
    ("tool_choice", Honoured),
    ("parallel_tool_calls", Honoured),
    // vLLM's extension: more variables for the chat template (`enable_thinking`, …).
    ("chat_template_kwargs", Honoured),
    (
        "functions",
        Refused("the deprecated `functions` are not supported"),
    ),
    (
        "function_call",
        Refused("the deprecated `function_call` is not supported"),
    ),
    ("audio", Refused("audio output is not supported")),
    ("prediction", Refused("predicted outputs are not supported")),
    ("reasoning_effort", Refused("this model does not reason")),
    ("verbosity", Refused("verbosity is not supported")),
    ("web_search_options", Refused("web search is not supported")),
];

const COMPLETIONS: &[(&str, Support)] = &[
    ("prompt", Honoured),
    ("echo", Honoured), // refused when true, where the request is built
    ("best_of", OnlyDefault(is_one, "best_of is not supported")),
    ("suffix", Refused("suffix (insertion) is not supported")),
];

const EMBEDDINGS: &[(&str, Support)] = &[
    ("model", Honoured),
    ("input", Honoured),
    ("encoding_format", Honoured),
    ("dimensions", Honoured),
    ("user", Honoured),
    ("truncate", Honoured), // text-embeddings-inference's extension
];

fn is_false(value: &Value) -> bool {
    value == &Value::Bool(false)
}

fn is_one(value: &Value) -> bool {
    value.as_u64() == Some(1)
}

fn is_text_only(value: &Value) -> bool {
    value
        .as_array()
        .is_some_and(|m| m.iter().all(|m| m == "text"))
}

fn is_auto_or_default(value: &Value) -> bool {
    value == "auto" || value == "default"
}

fn table(endpoint: Endpoint) -> impl Iterator<Item = &'static (&'static str, Support)> {
    let (shared, own): (&[_], &[_]) = match endpoint {
        Endpoint::ChatCompletions => (GENERATION, CHAT),
        Endpoint::Completions => (GENERATION, COMPLETIONS),
        Endpoint::Embeddings => (&[], EMBEDDINGS),
    };
    shared.iter().chain(own)
}

/// Refuses the first field of `body` that HelixFlow would not honour at `endpoint`, naming
/// it. A field set to `null` counts as absent, as the OpenAI API treats it.
pub fn check_fields(endpoint: Endpoint, body: &Map<String, Value>) -> Result<()> {
    for (field, value) in body {
        if value.is_null() {
            continue;
        }
        let support = table(endpoint).find(|(name, _)| name == field);
        let refusal = match support {
            None => format!("Unrecognized request argument supplied: {field}"),
            Some((_, Honoured)) => continue,
            Some((_, OnlyDefault(accepted, _))) if accepted(value) => continue,
            Some((_, OnlyDefault(_, why) | Refused(why))) => format!("{field}: {why}"),
        };
        return Err(Error::invalid_field(field.as_str(), refusal));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(endpoint: Endpoint, body: Value) -> Result<()> {
        check_fields(endpoint, body.as_object().unwrap())
    }

    #[test]
    fn honoured_fields_and_harmless_defaults_pass() {
        let body = json!({"model": "m", "messages": [], "temperature": 0.5, "store": false,
            "modalities": ["text"], "tool_choice": "none", "tools": null, "user": "u",
            "response_format": {"type": "text"}, "service_tier": "auto"});
        check(Endpoint::ChatCompletions, body).unwrap();
        check(
            Endpoint::Completions,
            json!({"model": "m", "prompt": "p", "best_of": 1}),
        )
        .unwrap();
        check(
            Endpoint::Embeddings,
            json!({"model": "m", "input": "x", "truncate": true}),
        )
        .unwrap();
    }

    #[test]
    fn unhonoured_and_unknown_fields_are_refused_by_name() {
        for (endpoint, field, value) in [
            (Endpoint::ChatCompletions, "functions", json!([])),
            (Endpoint::Completions, "tools", json!([])),
            (Endpoint::ChatCompletions, "audio", json!({"voice": "x"})),
            (Endpoint::ChatCompletions, "store", json!(true)),
            (
                Endpoint::ChatCompletions,
                "modalities",
                json!(["text", "audio"]),
            ),
            (Endpoint::ChatCompletions, "suffix", json!("x")), // a completions field
            (Endpoint::ChatCompletions, "frobnicate", json!(1)),
            (Endpoint::Completions, "suffix", json!("x")),
            (Endpoint::Completions, "best_of", json!(2)),
            (Endpoint::Completions, "messages", json!([])),
            (Endpoint::Embeddings, "temperature", json!(1)),
        ] {
            let mut body = json!({"model": "m"});
            body[field] = value;
            let error = check(endpoint, body).unwrap_err();
            assert_eq!(error.field(), Some(field), "{endpoint:?} {field}");
            assert!(error.to_string().contains(field), "{error}");
        }
    }
}

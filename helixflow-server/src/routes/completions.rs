//! `POST /v1/completions`: raw text continuation, no chat template.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use helixflow_core::chat_model::ChatModel;
use helixflow_core::completion::{new_id, unix_now, TextCompletion, Usage};
use helixflow_core::generation::TokenOutput;
use helixflow_core::platform::Caller;
use helixflow_core::sampling::MAX_TOP_LOGPROBS;
use helixflow_core::streaming::{ChunkHeader, TextChunker};
use serde_json::Value;

use super::generate::{collect, sse, stream_payloads, submit, to_json, Origin, StreamShape};
use crate::auth::check_model;
use crate::error::{ApiError, ErrorBody};
use crate::ratelimit;
use crate::state::AppState;
use crate::wire::{parse_body, CompletionRequest};

/// The prompt's token ids: a string, a list with one string, or token ids; text is
/// tokenised on the preparation pool.
async fn prompt_ids(
    state: &AppState,
    chat: &Arc<ChatModel>,
    prompt: &Value,
) -> Result<Vec<u32>, ApiError> {
    let bad = || {
        ApiError::invalid_param(
            "prompt",
            "prompt must be a string, a list with one string, or a list of token ids \
             (one prompt per request)",
        )
    };
    let encode = |text: &String| {
        let (chat, text) = (chat.clone(), text.clone());
        state.prepare(move || chat.encode_prompt(&text))
    };
    match prompt {
        Value::String(text) => encode(text).await,
        Value::Array(items) => match items.as_slice() {
            [Value::String(text)] => encode(text).await,
            [Value::Array(ids)] => token_ids(ids).ok_or_else(bad),
            ids if ids.iter().all(Value::is_u64) => token_ids(ids).ok_or_else(bad),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

fn token_ids(values: &[Value]) -> Option<Vec<u32>> {
    values
        .iter()
        .map(|v| v.as_u64().and_then(|id| u32::try_from(id).ok()))
        .collect()
}

/// Continues a prompt, as one JSON object or an SSE stream.
#[utoipa::path(post, path = "/completions", tag = "completions", security(("api_key" = [])),
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "The continuation; with `stream: true`, server-sent `text_completion` events ending with `data: [DONE]`",
         content((TextCompletion = "application/json"), (TextCompletion = "text/event-stream"))),
        (status = 400, description = "Malformed request, parameter out of range, or `echo`", body = ErrorBody),
        (status = 401, description = "No or a wrong API key", body = ErrorBody),
        (status = 404, description = "No such chat model", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 429, description = "Over the key's rate limit or budget; retry after `Retry-After` seconds", body = ErrorBody),
        (status = 503, description = "The queue is full; retry after `Retry-After` seconds", body = ErrorBody),
        (status = 504, description = "The generation ran past the request timeout", body = ErrorBody)))]
pub(crate) async fn completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: CompletionRequest = parse_body(body)?;
    let fields = &request.fields;
    check_model(&caller, &fields.model)?;
    let engine = state.chat_engine(&fields.model)?;
    if request.echo {
        return Err(ApiError::invalid_param("echo", "echo is not supported"));
    }
    let top = request.logprobs.unwrap_or(0);
    if top > MAX_TOP_LOGPROBS {
        return Err(ApiError::invalid_param(
            "logprobs",
            format!("logprobs must be at most {MAX_TOP_LOGPROBS}"),
        ));
    }
    let params = fields.options.params(request.logprobs.is_some(), top)?;
    let prompt = prompt_ids(&state, engine.model(), &request.prompt).await?;
    if prompt.is_empty() {
        return Err(ApiError::invalid_param("prompt", "the prompt is empty"));
    }
    let (n, logprobs) = (params.n, params.sampling.logprobs);
    let id = new_id("cmpl");
    let origin = Origin {
        caller: &caller,
        endpoint: "/v1/completions",
        request_id: &id,
    };
    let events = submit(&state, origin, engine, prompt, params).await?;
    let limits = events.limits();
    let (created, model) = (unix_now(), fields.model.clone());
    if !fields.stream {
        let done = collect(events, n, logprobs).await?;
        let answer = TextCompletion::new(id.clone(), created, model, done.choices, done.usage);
        let response = Json(answer).into_response();
        return Ok(ratelimit::with_headers(response, &limits, &id));
    }
    let header = ChunkHeader {
        id: id.clone(),
        created,
        model,
    };
    let shape = TextChunker::new(header, n);
    let response = sse(stream_payloads(events, fields.include_usage(), shape));
    Ok(ratelimit::with_headers(response, &limits, &id))
}

impl StreamShape for TextChunker {
    fn token(&mut self, choice: usize, output: TokenOutput) -> Option<String> {
        TextChunker::token(self, choice, output).map(|chunk| to_json(&chunk))
    }

    fn usage(&self, usage: Usage) -> String {
        to_json(&TextChunker::usage(self, usage))
    }
}

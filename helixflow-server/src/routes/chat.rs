//! `POST /v1/chat/completions`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use helixflow_core::chat_template::messages_from_openai;
use helixflow_core::completion::{new_id, unix_now, ChatCompletion, ChatCompletionChunk, Usage};
use helixflow_core::generation::TokenOutput;
use helixflow_core::platform::Caller;
use helixflow_core::streaming::{ChatChunker, ChunkHeader};

use super::generate::{collect, sse, stream_payloads, submit, to_json, Origin, StreamShape};
use crate::auth::check_model;
use crate::error::{ApiError, ErrorBody};
use crate::ratelimit;
use crate::state::AppState;
use crate::wire::{parse_body, ChatRequest};

/// Answers a conversation, as one JSON object or as an SSE stream of chunks.
#[utoipa::path(post, path = "/chat/completions", tag = "chat", security(("api_key" = [])),
    request_body = ChatRequest,
    responses(
        (status = 200, description = "The answer; with `stream: true`, server-sent `chat.completion.chunk` events ending with `data: [DONE]`",
         content((ChatCompletion = "application/json"), (ChatCompletionChunk = "text/event-stream"))),
        (status = 400, description = "Malformed request or parameter out of range", body = ErrorBody),
        (status = 401, description = "No or a wrong API key", body = ErrorBody),
        (status = 404, description = "No such chat model", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 429, description = "Over the key's rate limit or budget; retry after `Retry-After` seconds", body = ErrorBody),
        (status = 503, description = "The queue is full; retry after `Retry-After` seconds", body = ErrorBody),
        (status = 504, description = "The generation ran past the request timeout", body = ErrorBody)))]
pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: ChatRequest = parse_body(body)?;
    let fields = &request.fields;
    check_model(&caller, &fields.model)?;
    let engine = state.chat_engine(&fields.model)?;
    let params = fields
        .options
        .chat_params(request.logprobs, request.top_logprobs)?;
    let messages = messages_from_openai(&request.messages)?;
    let chat = engine.model().clone();
    let prompt = state.prepare(move || chat.encode_chat(&messages)).await?;
    let n = params.n;
    let logprobs = params.sampling.logprobs;
    let id = new_id("chatcmpl");
    let origin = Origin {
        caller: &caller,
        endpoint: "/v1/chat/completions",
        request_id: &id,
    };
    let events = submit(&state, origin, engine, prompt, params).await?;
    let limits = events.limits();
    let (created, model) = (unix_now(), fields.model.clone());
    if !fields.stream {
        let done = collect(events, n, logprobs).await?;
        let answer = ChatCompletion::new(id.clone(), created, model, done.choices, done.usage);
        let response = Json(answer).into_response();
        return Ok(ratelimit::with_headers(response, &limits, &id));
    }
    let header = ChunkHeader {
        id: id.clone(),
        created,
        model,
    };
    let shape = ChatChunker::new(header, n);
    let response = sse(stream_payloads(events, fields.include_usage(), shape));
    Ok(ratelimit::with_headers(response, &limits, &id))
}

impl StreamShape for ChatChunker {
    fn token(&mut self, choice: usize, output: TokenOutput) -> Option<String> {
        ChatChunker::token(self, choice, output).map(|chunk| to_json(&chunk))
    }

    fn usage(&self, usage: Usage) -> String {
        to_json(&ChatChunker::usage(self, usage))
    }
}

//! `POST /v1/chat/completions`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use helixflow_core::chat_template::messages_from_openai;
use helixflow_core::completion::{ChatCompletion, ChatCompletionChunk};
use helixflow_core::platform::Caller;
use helixflow_core::request::GenerationRequest;

use super::answer::respond;
use crate::error::{ApiError, ErrorBody};
use crate::inference::prepare_for;
use crate::state::AppState;
use crate::wire::{parse_openai_body, ChatRequest};
use helixflow_core::request::fields::Endpoint;

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
    let request: ChatRequest = parse_openai_body(body, Endpoint::ChatCompletions)?;
    let fields = &request.fields;
    let (messages, options) = (request.messages.clone(), fields.options.clone());
    let (logprobs, top_logprobs) = (request.logprobs, request.top_logprobs);
    let (engine, prepared) = prepare_for(&state, &caller, &fields.model, move |chat| {
        let messages = messages_from_openai(&messages)?;
        GenerationRequest::chat(chat, &messages, &options, logprobs, top_logprobs)
    })
    .await?;
    let origin = (&caller, "/v1/chat/completions");
    respond(&state, origin, engine, prepared, fields).await
}

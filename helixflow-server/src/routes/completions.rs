//! `POST /v1/completions`: raw text continuation, no chat template.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use helixflow_core::completion::TextCompletion;
use helixflow_core::platform::Caller;
use helixflow_core::request::{GenerationRequest, TextPrompt};

use super::answer::respond;
use crate::error::{ApiError, ErrorBody};
use crate::inference::prepare_for;
use crate::state::AppState;
use crate::wire::{parse_openai_body, CompletionRequest};
use helixflow_core::request::fields::Endpoint;

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
    let request: CompletionRequest = parse_openai_body(body, Endpoint::Completions)?;
    let fields = &request.fields;
    let (prompt, options) = (request.prompt.clone(), fields.options.clone());
    let (logprobs, echo) = (request.logprobs, request.echo);
    let (engine, prepared) = prepare_for(&state, &caller, &fields.model, move |chat| {
        let prompt = TextPrompt::from_json(&prompt)?;
        GenerationRequest::text(chat, prompt, &options, logprobs, echo)
    })
    .await?;
    respond(
        &state,
        (&caller, "/v1/completions"),
        engine,
        prepared,
        fields,
    )
    .await
}

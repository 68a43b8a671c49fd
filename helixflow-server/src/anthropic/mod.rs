//! Anthropic's Messages API (`POST /v1/messages`, streamed or not, and
//! `POST /v1/messages/count_tokens`), for Claude Code and the `anthropic` SDKs: the request is
//! read into the core's terms ([`wire`]), goes the way every generation goes (limits, usage,
//! the engine), and the core's answer is shaped as Anthropic's message or events
//! ([`answer`]). Keys come as `x-api-key` or bearer tokens; every error on these routes has
//! Anthropic's shape ([`errors`]).

mod answer;
mod wire;

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::stream::{self, StreamExt};
use helixflow_core::platform::Caller;
use helixflow_core::registry::ModelLease;
use helixflow_core::request::GenerationRequest;
use helixflow_core::streaming::{Answer, AnswerBuilder, AnswerChunk, AnswerPart};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::inference::{answer_with, prepare_for, Events};
use crate::state::AppState;
use answer::{error_body, EventShaper};
use wire::MessagesRequest;

/// `POST /v1/messages`: a conversation answered as an Anthropic `message`, or streamed as
/// its events.
pub(crate) async fn messages(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (request, engine, prepared) = prepare(&state, &caller, body, false).await?;
    let stream = request.stream;
    let builder = prepared.answer_builder(request.model, stream, true);
    let origin = (&caller, "/v1/messages");
    answer_with(
        &state,
        origin,
        engine,
        prepared,
        builder,
        |events, builder| async move {
            if stream {
                return Ok(sse(events, builder));
            }
            match events.answer(builder).await? {
                Answer::Chat(answer) => Ok(Json(answer::message(&answer)).into_response()),
                Answer::Text(_) => Err(ApiError::internal("a chat answered as text")),
            }
        },
    )
    .await
}

/// `POST /v1/messages/count_tokens`: the prompt's length, as the model would see it.
pub(crate) async fn count_tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (_, _, prepared) = prepare(&state, &caller, body, true).await?;
    Ok(Json(json!({"input_tokens": prepared.prompt.len()})).into_response())
}

/// What a Messages request asks beside its conversation.
struct Asked {
    model: String,
    stream: bool,
}

/// Reads and checks a Messages body and builds the core's request for its model.
async fn prepare(
    state: &AppState,
    caller: &Caller,
    body: Result<Bytes, BytesRejection>,
    count_tokens: bool,
) -> Result<(Asked, ModelLease, GenerationRequest), ApiError> {
    let value: Value = crate::wire::parse_body(body)?;
    let MessagesRequest {
        model,
        messages,
        options,
        stream,
    } = MessagesRequest::from_json(&value, count_tokens)?;
    let (engine, prepared) = prepare_for(state, caller, &model, move |chat| {
        GenerationRequest::chat(chat, &messages, &options, false, None)
    })
    .await?;
    Ok((Asked { model, stream }, engine, prepared))
}

/// A streamed answer as Anthropic's server-sent events; a failure mid-stream is an `error`
/// event, after which the stream ends.
fn sse(events: Events, builder: AnswerBuilder) -> Response {
    let start = Some((events, builder, EventShaper::default()));
    let named = stream::unfold(start, |state| async move {
        let (mut events, mut builder, mut shaper) = state?;
        match events.next_part(&mut builder).await {
            Ok(Some(AnswerPart::Chunk(AnswerChunk::Chat(chunk)))) => {
                let shaped = shaper.chunk(&chunk, builder.prompt_tokens());
                Some((shaped, Some((events, builder, shaper))))
            }
            Ok(Some(_)) => Some((Vec::new(), Some((events, builder, shaper)))),
            Ok(None) => None,
            Err(e) => Some((
                vec![("error", error_body(e.status.as_u16(), &e.message))],
                None,
            )),
        }
    });
    let events = named.flat_map(stream::iter).map(|(name, data)| {
        Ok::<_, Infallible>(Event::default().event(name).data(data.to_string()))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Gives every error answer of the Anthropic routes (the handlers', and the authentication's
/// and the limits' before them) Anthropic's shape: `{"type": "error", "error": {"type",
/// "message"}}`, with the same status and headers.
pub(crate) async fn errors(request: Request, next: Next) -> Response {
    crate::error::reshape(next.run(request).await, error_body).await
}

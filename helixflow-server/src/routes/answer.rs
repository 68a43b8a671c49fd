//! Answering a chat or text completion: the core's validated request submitted for the
//! caller, then its answer as one JSON object, or streamed as server-sent events (the chunks
//! the core's [`AnswerBuilder`] makes of the engine's events, one `data:` line each, ending
//! with `data: [DONE]`).

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use helixflow_core::platform::Caller;
use helixflow_core::registry::ModelLease;
use helixflow_core::request::GenerationRequest;
use helixflow_core::streaming::{AnswerBuilder, AnswerPart};

use crate::error::ApiError;
use crate::inference::{answer_with, Events};
use crate::state::AppState;
use crate::wire::GenerationFields;

/// Submits `request` for `caller` at `endpoint` and answers it as `fields` ask: one JSON
/// object, or an SSE stream; with the `x-ratelimit-*` headers either way.
pub(crate) async fn respond(
    state: &AppState,
    origin: (&Caller, &'static str),
    engine: ModelLease,
    request: GenerationRequest,
    fields: &GenerationFields,
) -> Result<Response, ApiError> {
    let stream = fields.stream;
    let builder = request.answer_builder(fields.model.clone(), stream, fields.include_usage());
    answer_with(
        state,
        origin,
        engine,
        request,
        builder,
        |events, builder| async move {
            Ok(if stream {
                sse(events, builder)
            } else {
                Json(events.answer(builder).await?).into_response()
            })
        },
    )
    .await
}

/// A payload as JSON; the response types always serialise.
fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("response types serialise")
}

/// The JSON chunks of a streamed generation, ending after the last one or after an error
/// (the engine's failure, the request timeout, a shutdown).
fn chunks(
    events: Events,
    builder: AnswerBuilder,
) -> impl Stream<Item = Result<String, ApiError>> + Send + 'static {
    stream::unfold(Some((events, builder)), |state| async move {
        let (mut events, mut builder) = state?;
        match events.next_part(&mut builder).await {
            Ok(Some(AnswerPart::Chunk(chunk))) => {
                Some((Ok(to_json(&chunk)), Some((events, builder))))
            }
            Ok(Some(AnswerPart::Whole(answer))) => Some((Ok(to_json(&answer)), None)),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// The SSE response of a streamed generation: `builder`'s chunks, then `data: [DONE]`. A
/// failure mid-stream is sent as an error event, after which the stream ends.
fn sse(events: Events, builder: AnswerBuilder) -> Response {
    let events = chunks(events, builder)
        .map(|item| {
            let data = match item {
                Ok(json) => json,
                Err(e) => e.body().to_string(),
            };
            Ok::<_, Infallible>(Event::default().data(data))
        })
        .chain(stream::once(async { Ok(Event::default().data("[DONE]")) }));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

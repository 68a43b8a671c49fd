//! OpenAI's Responses API, for the agents built on it: `POST /v1/responses` (text or item
//! input, `instructions`, `max_output_tokens`, sampling, `text.format`, function `tools`,
//! `stream` with the Responses events) and `GET /v1/responses/{id}`. Responses are stored
//! unless `store: false`, with their owner's key, so that `previous_response_id` continues a
//! conversation; requests go the way every generation goes (keys, limits, usage records).

mod answer;
mod store;
mod wire;

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::stream::{self, StreamExt};
use helixflow_core::chat_template::ChatMessage;
use helixflow_core::platform::Caller;
use helixflow_core::request::GenerationRequest;
use helixflow_core::streaming::{Answer, AnswerBuilder, AnswerChunk, AnswerPart};
use serde_json::Value;

use crate::error::ApiError;
use crate::inference::{answer_with, prepare_for, Events};
use crate::state::AppState;
use answer::{response_id, whole, EventShaper, NamedEvent, ResponseHead};
pub(crate) use store::MemoryResponses;
use wire::ResponsesRequest;

/// What a streamed or whole answer needs to be stored once done.
#[derive(Clone)]
struct Keeping {
    state: AppState,
    caller: Caller,
    /// The conversation the answer follows (without `instructions`).
    conversation: Vec<ChatMessage>,
}

/// `POST /v1/responses`.
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let value: Value = crate::wire::parse_body(body)?;
    let request = ResponsesRequest::from_json(&value)?;
    let mut conversation = match &request.previous_response_id {
        Some(id) => store::conversation(&state, &caller, id).await?,
        None => Vec::new(),
    };
    conversation.extend(request.input);
    let messages: Vec<ChatMessage> = request
        .instructions
        .map(|text| ChatMessage::new("system", text))
        .into_iter()
        .chain(conversation.iter().cloned())
        .collect();
    let options = request.options;
    let (lease, prepared) = prepare_for(&state, &caller, &request.model, move |chat| {
        GenerationRequest::chat(chat, &messages, &options, false, None)
    })
    .await?;
    let stream = request.stream;
    let builder = prepared.answer_builder(request.model.clone(), stream, true);
    let head = ResponseHead {
        id: response_id(&builder.header().id),
        created_at: builder.header().created,
        model: request.model,
        echo: request.echo,
    };
    let keeping = request.store.then(|| Keeping {
        state: state.clone(),
        caller: caller.clone(),
        conversation,
    });
    answer_with(
        &state,
        (&caller, "/v1/responses"),
        lease,
        prepared,
        builder,
        |events, builder| async move {
            if stream {
                return Ok(sse(events, builder, EventShaper::new(head), keeping));
            }
            let Answer::Chat(answer) = events.answer(builder).await? else {
                return Err(ApiError::internal("a chat answered as text"));
            };
            let (object, reply) = whole(&head, &answer);
            if let Some(keeping) = keeping {
                store::save(
                    &keeping.state,
                    &keeping.caller,
                    &object,
                    keeping.conversation,
                    reply,
                )
                .await?;
            }
            Ok(Json(object).into_response())
        },
    )
    .await
}

/// `GET /v1/responses/{id}`: a stored response of the caller's.
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let stored = store::find(&state, &caller, &id, None).await?;
    let object = serde_json::from_str(&stored.response)
        .map_err(|e| ApiError::internal(format!("the stored response {id} is unreadable: {e}")))?;
    Ok(Json(object))
}

/// A streamed answer as the Responses events; the answer is stored (when asked) before its
/// last event, so that a client may continue from it at once. A failure mid-stream is a
/// `response.failed` event, after which the stream ends.
fn sse(
    events: Events,
    builder: AnswerBuilder,
    mut shaper: EventShaper,
    keeping: Option<Keeping>,
) -> Response {
    let opening = shaper.start();
    let start = Some((events, builder, shaper, keeping));
    let named = stream::unfold(start, |state| async move {
        let (mut events, mut builder, mut shaper, keeping) = state?;
        match events.next_part(&mut builder).await {
            Ok(Some(AnswerPart::Chunk(AnswerChunk::Chat(chunk)))) => {
                let mut shaped = shaper.chunk(&chunk);
                if let (Some((object, reply)), Some(keeping)) = (shaper.finished(), &keeping) {
                    let (object, reply) = (object.clone(), reply.clone());
                    let conversation = keeping.conversation.clone();
                    let kept = store::save(
                        &keeping.state,
                        &keeping.caller,
                        &object,
                        conversation,
                        reply,
                    )
                    .await;
                    if let Err(e) = kept {
                        shaped.pop();
                        shaped.extend(shaper.failed("server_error", &e.message));
                    }
                }
                Some((shaped, Some((events, builder, shaper, keeping))))
            }
            Ok(Some(_)) => Some((Vec::new(), Some((events, builder, shaper, keeping)))),
            Ok(None) => None,
            Err(e) => {
                let code = if e.status.is_server_error() {
                    "server_error"
                } else {
                    "invalid_prompt"
                };
                Some((shaper.failed(code, &e.message), None))
            }
        }
    });
    let events = stream::iter([opening])
        .chain(named)
        .flat_map(stream::iter)
        .map(|(name, data): NamedEvent| {
            Ok::<_, Infallible>(Event::default().event(name).data(data.to_string()))
        });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

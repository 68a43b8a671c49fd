//! Running a generation on the engine for a handler: submission, the event pump, and the
//! collection of a whole answer.

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use helixflow_core::completion::{ChoiceLogprobs, FinishReason};
use helixflow_core::engine::EngineEvent;
use helixflow_core::generation::GenerationParams;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::state::AppState;

/// Queues a generation and returns its events as an async channel. A blocking task pumps the
/// engine's stream into it; when the client goes away the channel closes, the pump drops the
/// engine stream, and the engine cancels the request.
pub(crate) fn submit(
    state: &AppState,
    prompt: Vec<u32>,
    params: GenerationParams,
) -> Result<mpsc::UnboundedReceiver<EngineEvent>, ApiError> {
    let seed = params.sampling.seed;
    let events = state.engine().submit(prompt, params, seed)?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::task::spawn_blocking(move || {
        for event in events {
            if tx.send(event).is_err() {
                return; // the client is gone: dropping `events` cancels the request
            }
        }
    });
    Ok(rx)
}

/// One choice's whole answer.
#[derive(Debug, Default)]
pub(crate) struct ChoiceResult {
    pub(crate) text: String,
    pub(crate) logprobs: Option<ChoiceLogprobs>,
    pub(crate) finish: Option<FinishReason>,
}

/// Every choice's answer and the usage counts.
pub(crate) struct Collected {
    pub(crate) choices: Vec<ChoiceResult>,
    pub(crate) prompt_tokens: usize,
    pub(crate) completion_tokens: usize,
}

/// Waits for the whole generation.
pub(crate) async fn collect(
    mut events: mpsc::UnboundedReceiver<EngineEvent>,
    n: usize,
    logprobs: bool,
) -> Result<Collected, ApiError> {
    let mut collected = Collected {
        choices: (0..n)
            .map(|_| ChoiceResult {
                logprobs: logprobs.then(ChoiceLogprobs::default),
                ..ChoiceResult::default()
            })
            .collect(),
        prompt_tokens: 0,
        completion_tokens: 0,
    };
    while let Some(event) = events.recv().await {
        match event {
            EngineEvent::Started { prompt_tokens } => collected.prompt_tokens = prompt_tokens,
            EngineEvent::Token { choice, output } => {
                let Some(c) = collected.choices.get_mut(choice) else {
                    continue;
                };
                c.text.push_str(&output.text);
                c.finish = output.finish.or(c.finish);
                if let (Some(lps), Some(lp)) = (c.logprobs.as_mut(), output.logprob) {
                    lps.content.push(lp);
                }
            }
            EngineEvent::Done { completion_tokens } => {
                collected.completion_tokens = completion_tokens;
                return Ok(collected);
            }
            EngineEvent::Failed(e) => return Err(e.into()),
        }
    }
    Err(ApiError::internal(
        "the engine stopped before the answer was complete",
    ))
}

/// An SSE response from JSON payloads, ending with `data: [DONE]`. A failure mid-stream is
/// sent as an error event, after which the stream ends.
pub(crate) fn sse(
    payloads: impl Stream<Item = Result<serde_json::Value, ApiError>> + Send + 'static,
) -> Response {
    use futures_util::StreamExt;
    let events = payloads
        .map(|item| {
            let data = match item {
                Ok(value) => value.to_string(),
                Err(e) => e.body().to_string(),
            };
            Ok::<_, Infallible>(Event::default().data(data))
        })
        .chain(stream::once(async { Ok(Event::default().data("[DONE]")) }));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

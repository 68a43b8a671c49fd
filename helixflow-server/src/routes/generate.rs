//! Running a generation on the engine for a handler: admission against the caller's limits,
//! submission, the event pump, and the collection of a whole answer.

use std::convert::Infallible;
use std::time::Instant;

use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use helixflow_core::completion::{GeneratedChoice, Usage};
use helixflow_core::engine::{EngineEvent, EngineHandle};
use helixflow_core::generation::{GenerationParams, TokenOutput};
use helixflow_core::platform::{Caller, LimitStatus, Metered, MeteredRequest};
use helixflow_core::streaming::ChoiceCollector;
use tokio::sync::{mpsc, watch};

use crate::error::ApiError;
use crate::ratelimit;
use crate::state::{AppState, Phase};

/// Who asked for a generation, and through what: for the caller's limits and the usage
/// record.
pub(crate) struct Origin<'a> {
    /// The authenticated caller.
    pub(crate) caller: &'a Caller,
    /// The endpoint (`/v1/chat/completions`, or the gRPC method).
    pub(crate) endpoint: &'static str,
    /// The request's id: the response's `id`.
    pub(crate) request_id: &'a str,
}

/// Admits a generation against the caller's limits (its prompt plus the most it may generate
/// for every choice; 429 when over), queues it, and returns its events as an async channel.
/// A blocking task pumps the engine's stream into it, counting the tokens for the meter;
/// when the client goes away the channel closes, the pump drops the engine stream, and the
/// engine cancels the request.
pub(crate) async fn submit(
    state: &AppState,
    origin: Origin<'_>,
    engine: &EngineHandle,
    prompt: Vec<u32>,
    params: GenerationParams,
) -> Result<Events, ApiError> {
    let context = engine.model().context_length();
    let per_choice = params.token_budget(prompt.len(), context)?;
    let request = MeteredRequest {
        request_id: Some(origin.request_id.to_string()),
        model: engine.model().name().to_string(),
        endpoint: origin.endpoint.to_string(),
        prompt_tokens: prompt.len() as u64,
        max_completion_tokens: (per_choice as u64).saturating_mul(params.n.max(1) as u64),
    };
    let metered = state
        .meter()
        .admit(origin.caller, request)
        .await
        .map_err(ratelimit::refused)?;
    let events = match engine.submit(prompt, params) {
        Ok(events) => events,
        Err(e) => {
            metered.discard(); // it never ran: its tokens go back
            return Err(e.into());
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let metrics = state.metrics().clone();
    let progress = metered.progress();
    tokio::task::spawn_blocking(move || {
        let (mut last, mut first) = (Instant::now(), true);
        for event in events {
            match &event {
                EngineEvent::Started { prompt_tokens } => {
                    progress.prompt();
                    metrics.prompt(*prompt_tokens);
                }
                EngineEvent::Token { .. } => {
                    progress.token();
                    let now = Instant::now();
                    metrics.token(std::mem::replace(&mut first, false), now - last);
                    last = now;
                }
                _ => {}
            }
            if tx.send(event).is_err() {
                return; // the client is gone: dropping `events` cancels the request
            }
        }
    });
    Ok(Events {
        rx,
        deadline: tokio::time::Instant::now() + state.request_timeout(),
        phase: state.phase(),
        prompt_tokens: 0,
        metered: Some(metered),
    })
}

/// A generation's events, cut off at the request's deadline. It holds the request's
/// [`Metered`] guard until the generation ends; dropped before, the request counts as
/// cancelled.
pub(crate) struct Events {
    rx: mpsc::UnboundedReceiver<EngineEvent>,
    deadline: tokio::time::Instant,
    /// A shutdown's progress: at its cut the generation ends with a shutdown error.
    phase: watch::Receiver<Phase>,
    prompt_tokens: usize,
    metered: Option<Metered>,
}

impl Events {
    /// The next event; an engine failure is an error. Past the deadline this is a 504 error,
    /// and at the end of a shutdown's grace period a 503 one (`server_shutting_down`);
    /// dropping `self` then cancels the generation. The end (done, failed, timed out, cut
    /// off) settles the request's usage.
    pub(crate) async fn next(&mut self) -> Result<EngineEvent, ApiError> {
        let received = tokio::select! {
            biased;
            () = Phase::reached(&mut self.phase, Phase::Cut) => None,
            received = tokio::time::timeout_at(self.deadline, self.rx.recv()) => Some(received),
        };
        let next = match received {
            None => Err(ApiError::shutting_down()),
            Some(Ok(Some(EngineEvent::Failed(e)))) => Err(ApiError::from(e)),
            Some(Ok(Some(event))) => Ok(event),
            Some(Ok(None)) => Err(ApiError::internal(
                "the engine stopped before the answer was complete",
            )),
            Some(Err(_)) => Err(ApiError::timeout()),
        };
        match &next {
            Ok(EngineEvent::Started { prompt_tokens }) => self.prompt_tokens = *prompt_tokens,
            Ok(EngineEvent::Done { completion_tokens }) => {
                if let Some(metered) = self.metered.take() {
                    metered.finish(self.prompt_tokens as u64, *completion_tokens as u64);
                }
            }
            Err(e) => {
                if let Some(metered) = self.metered.take() {
                    if e.status == StatusCode::GATEWAY_TIMEOUT {
                        metered.cancel(e.status.as_u16());
                    } else {
                        metered.fail(e.status.as_u16());
                    }
                }
            }
            Ok(_) => {}
        }
        next
    }

    /// The prompt's length, once the `Started` event has been seen.
    pub(crate) fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// The caller's standing against its limits, for the `x-ratelimit-*` headers.
    pub(crate) fn limits(&self) -> Vec<LimitStatus> {
        self.metered
            .as_ref()
            .map(|m| m.limits().to_vec())
            .unwrap_or_default()
    }
}

/// Every choice's answer and the usage counts.
pub(crate) struct Collected {
    pub(crate) choices: Vec<GeneratedChoice>,
    pub(crate) usage: Usage,
}

/// Waits for the whole generation.
pub(crate) async fn collect(
    mut events: Events,
    n: usize,
    logprobs: bool,
) -> Result<Collected, ApiError> {
    let mut collector = ChoiceCollector::new(n, logprobs);
    loop {
        if let Some(usage) = collector.push(events.next().await?)? {
            let choices = collector.into_choices();
            return Ok(Collected { choices, usage });
        }
    }
}

/// A payload as JSON; the response types always serialise.
pub(crate) fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("response types serialise")
}

/// What a streaming endpoint makes of the engine's events: a JSON payload per token (or none,
/// for a token whose text is held back) and the final usage payload. Payloads are serialised
/// straight from typed values, so f32 figures print in their shortest form.
pub(crate) trait StreamShape: Send + 'static {
    /// The payload of choice `choice`'s token `output`, if there is one to send.
    fn token(&mut self, choice: usize, output: TokenOutput) -> Option<String>;
    /// The last payload, with the usage counts (when `include_usage` was asked for).
    fn usage(&self, usage: Usage) -> String;
}

/// The payloads of a streamed generation in `shape`, ending after `Done` or after an error
/// (the engine's failure, or the request timeout).
pub(crate) fn stream_payloads(
    events: Events,
    include_usage: bool,
    shape: impl StreamShape,
) -> impl Stream<Item = Result<String, ApiError>> + Send + 'static {
    struct State<S> {
        events: Events,
        shape: S,
        finished: bool,
    }
    let state = State {
        events,
        shape,
        finished: false,
    };
    stream::unfold(state, move |mut s| async move {
        if s.finished {
            return None;
        }
        loop {
            let event = match s.events.next().await {
                Ok(event) => event,
                Err(e) => {
                    s.finished = true;
                    return Some((Err(e), s));
                }
            };
            match event {
                EngineEvent::Started { .. } => {}
                EngineEvent::Token { choice, output } => {
                    if let Some(payload) = s.shape.token(choice, output) {
                        return Some((Ok(payload), s));
                    }
                }
                EngineEvent::Done { completion_tokens } => {
                    s.finished = true;
                    if !include_usage {
                        return None;
                    }
                    let payload = s
                        .shape
                        .usage(Usage::new(s.events.prompt_tokens(), completion_tokens));
                    return Some((Ok(payload), s));
                }
                EngineEvent::Failed(e) => {
                    s.finished = true;
                    return Some((Err(e.into()), s));
                }
            }
        }
    })
}

/// An SSE response from JSON payloads, ending with `data: [DONE]`. A failure mid-stream is
/// sent as an error event, after which the stream ends.
pub(crate) fn sse(
    payloads: impl Stream<Item = Result<String, ApiError>> + Send + 'static,
) -> Response {
    use futures_util::StreamExt;
    let events = payloads
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

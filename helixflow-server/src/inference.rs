//! One request's way through the server, shared by the HTTP routes and the gRPC service:
//! admission against the caller's limits, submission of the core's validated
//! [`GenerationRequest`] to the engine, its events awaited (no thread per request) with the
//! deadline and the shutdown applied and the usage settled, and embeddings the same way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use axum::response::Response;
use helixflow_core::chat_model::ChatModel;
use helixflow_core::embeddings::{EmbeddingInput, Embeddings};
use helixflow_core::engine::{EngineEvent, RequestStream};
use helixflow_core::platform::{Caller, LimitStatus, Metered, MeteredRequest, Progress};
use helixflow_core::registry::ModelLease;
use helixflow_core::request::GenerationRequest;
use helixflow_core::streaming::{Answer, AnswerBuilder, AnswerPart};
use tokio::sync::watch;

use crate::auth::check_model;
use crate::error::ApiError;
use crate::metrics::Metrics;
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

/// The request `build` makes of the chat model `model` for `caller` (who must be allowed
/// it), built off the executor (templates and tokenisation take a while on long prompts),
/// and the model, held for the request (loaded first if it is not). Every HTTP API's
/// generation routes start here.
pub(crate) async fn prepare_for(
    state: &AppState,
    caller: &Caller,
    model: &str,
    build: impl FnOnce(&ChatModel) -> helixflow_core::Result<GenerationRequest> + Send + 'static,
) -> Result<(ModelLease, GenerationRequest), ApiError> {
    check_model(caller, model)?;
    let lease = state.chat_lease(model).await?;
    let chat = state.chat_of(&lease)?.model().clone();
    let prepared = state.prepare(move || build(&chat)).await?;
    Ok((lease, prepared))
}

/// Submits `request` for `caller` at `endpoint` and answers with the response `shape` makes
/// of its events through `builder` (each API's shape of the answer, whole or streamed), with
/// the `x-ratelimit-*` headers.
pub(crate) async fn answer_with<Shaped>(
    state: &AppState,
    (caller, endpoint): (&Caller, &'static str),
    lease: ModelLease,
    request: GenerationRequest,
    builder: AnswerBuilder,
    shape: impl FnOnce(Events, AnswerBuilder) -> Shaped,
) -> Result<Response, ApiError>
where
    Shaped: std::future::Future<Output = Result<Response, ApiError>>,
{
    let id = builder.header().id.clone();
    let origin = Origin {
        caller,
        endpoint,
        request_id: &id,
    };
    let events = submit(state, origin, lease, request).await?;
    let limits = events.limits();
    let response = shape(events, builder).await?;
    Ok(ratelimit::with_headers(response, &limits, &id))
}

/// Admits `request` against the caller's limits (its prompt plus the most it may generate
/// for every choice; 429 when over) and queues it on the engine of the model `lease` holds
/// (held until the generation ends). Dropping the returned [`Events`] (the client went
/// away) cancels the generation.
pub(crate) async fn submit(
    state: &AppState,
    origin: Origin<'_>,
    lease: ModelLease,
    request: GenerationRequest,
) -> Result<Events, ApiError> {
    let GenerationRequest { prompt, params, .. } = request;
    let engine = state.chat_of(&lease)?;
    let context = engine.model().context_length();
    let per_choice = params.token_budget(prompt.len(), context)?;
    let metered = MeteredRequest {
        request_id: Some(origin.request_id.to_string()),
        model: engine.model().name().to_string(),
        endpoint: origin.endpoint.to_string(),
        prompt_tokens: prompt.len() as u64,
        max_completion_tokens: (per_choice as u64).saturating_mul(params.n.max(1) as u64),
    };
    let metered = state
        .meter()
        .admit(origin.caller, metered)
        .await
        .map_err(ratelimit::refused)?;
    let stream = match engine.submit(prompt, params) {
        Ok(stream) => stream,
        Err(e) => {
            metered.discard(); // it never ran: its tokens go back
            return Err(e.into());
        }
    };
    Ok(Events {
        stream,
        deadline: tokio::time::Instant::now() + state.request_timeout(),
        phase: state.phase(),
        prompt_tokens: 0,
        progress: metered.progress(),
        metrics: state.metrics().clone(),
        last_token: (Instant::now(), true),
        first_token: None,
        metered: Some(metered),
        _model: lease,
    })
}

/// A generation's events, awaited, cut off at the request's deadline. It holds the
/// request's [`Metered`] guard until the generation ends; dropped before, the request counts
/// as cancelled (and the engine stops it).
pub(crate) struct Events {
    stream: RequestStream,
    deadline: tokio::time::Instant,
    /// A shutdown's progress: at its cut the generation ends with a shutdown error.
    phase: watch::Receiver<Phase>,
    prompt_tokens: usize,
    progress: Arc<Progress>,
    metrics: Arc<Metrics>,
    /// When the last token came (at first: when the request was queued), and whether none
    /// has come yet.
    last_token: (Instant, bool),
    /// When the first token came.
    first_token: Option<Instant>,
    metered: Option<Metered>,
    /// The model, held until the generation ends: it is not unloaded under it.
    _model: ModelLease,
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
            received = tokio::time::timeout_at(self.deadline, self.stream.recv_async()) => {
                Some(received)
            }
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
            Ok(EngineEvent::Started { prompt_tokens }) => {
                self.prompt_tokens = *prompt_tokens;
                self.progress.prompt();
                self.metrics.prompt(*prompt_tokens);
            }
            Ok(EngineEvent::Token { .. }) => {
                self.progress.token();
                let now = Instant::now();
                let (last, first) = std::mem::replace(&mut self.last_token, (now, false));
                if first {
                    self.first_token = Some(now);
                }
                self.metrics.token(first, now - last);
            }
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
            Ok(EngineEvent::Failed(_)) => {}
        }
        next
    }

    /// The next part of the answer `builder` makes of the events: a chunk, or the whole
    /// answer; `None` once the generation is done.
    pub(crate) async fn next_part(
        &mut self,
        builder: &mut AnswerBuilder,
    ) -> Result<Option<AnswerPart>, ApiError> {
        if let Some(part) = builder.pop_ready() {
            return Ok(Some(part));
        }
        while !builder.is_done() {
            let event = self.next().await?;
            if let Some(part) = builder.push(event)? {
                return Ok(Some(part));
            }
        }
        Ok(None)
    }

    /// The whole answer that `builder` (made with [`AnswerBuilder::whole`]) makes.
    pub(crate) async fn answer(self, builder: AnswerBuilder) -> Result<Answer, ApiError> {
        self.answer_timed(builder).await.map(|(answer, _)| answer)
    }

    /// [`Self::answer`], and when its first token came.
    pub(crate) async fn answer_timed(
        mut self,
        mut builder: AnswerBuilder,
    ) -> Result<(Answer, Option<Instant>), ApiError> {
        loop {
            match self.next_part(&mut builder).await? {
                Some(AnswerPart::Whole(answer)) => return Ok((answer, self.first_token)),
                Some(AnswerPart::Chunk(_)) => {}
                None => return Err(ApiError::internal("the generation ended without an answer")),
            }
        }
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

/// Sets its flag when dropped: the handler's future was dropped (the client went away), so
/// the encoder stops at its next batch.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Embeds `input` for the caller: tokenises and checks it against the request limits (so
/// that its limits are charged the exact token count, 429 when over), then runs the encoder,
/// which stops between batches if the caller goes away. Both run on blocking threads (they
/// are compute-bound). Also the caller's standing against its limits.
pub(crate) async fn embed_for(
    state: &AppState,
    origin: Origin<'_>,
    lease: ModelLease,
    input: EmbeddingInput,
    truncate: bool,
) -> Result<(Embeddings, Vec<LimitStatus>), ApiError> {
    let model = state.embedder_of(&lease)?.clone();
    let tokenizer = model.clone();
    let sequences = state
        .prepare(move || tokenizer.prepare_request(input, truncate))
        .await
        .map_err(|e| ApiError {
            param: Some("input".into()),
            ..e
        })?;
    let tokens: usize = sequences.iter().map(Vec::len).sum();
    let request = MeteredRequest {
        request_id: Some(origin.request_id.to_string()),
        model: model.name().to_string(),
        endpoint: origin.endpoint.to_string(),
        prompt_tokens: tokens as u64,
        max_completion_tokens: 0,
    };
    let metered = state
        .meter()
        .admit(origin.caller, request)
        .await
        .map_err(ratelimit::refused)?;
    let limits = metered.limits().to_vec();
    metered.progress().prompt();
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(cancelled.clone());
    let work = tokio::task::spawn_blocking(move || {
        // The model stays held while the encoder runs, even if the client went away.
        let _held = lease;
        model.embed_prepared(&sequences, &|| cancelled.load(Ordering::Relaxed))
    });
    match work.await {
        Ok(Ok(embeddings)) => {
            metered.finish(embeddings.prompt_tokens as u64, 0);
            Ok((embeddings, limits))
        }
        Ok(Err(e)) => {
            let e = ApiError::from(e);
            if e.status.is_client_error() {
                metered.discard(); // refused input (a token outside the vocabulary)
            } else {
                metered.fail(e.status.as_u16());
            }
            Err(e)
        }
        Err(e) => {
            let e = ApiError::internal(format!("the embedding task failed: {e}"));
            metered.fail(e.status.as_u16());
            Err(e)
        }
    }
}

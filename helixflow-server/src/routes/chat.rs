//! `POST /v1/chat/completions`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};
use helixflow_core::chat_template::messages_from_openai;
use helixflow_core::completion::{
    new_id, system_fingerprint, unix_now, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
    ChatDelta, ChoiceLogprobs, Usage,
};
use helixflow_core::engine::EngineEvent;

use super::generate::{collect, sse, submit, Events};
use crate::error::ApiError;
use crate::state::AppState;
use crate::wire::{parse_body, ChatRequest};

/// Answers a conversation, as one JSON object or as an SSE stream of chunks.
pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: ChatRequest = parse_body(body)?;
    let fields = &request.fields;
    if fields.model != state.chat_model_id() {
        return Err(ApiError::unknown_model(&fields.model));
    }
    let params = fields.params(request.logprobs, request.top_logprobs.unwrap_or(0))?;
    if request.top_logprobs.is_some_and(|n| n > 0) && !request.logprobs {
        return Err(ApiError::invalid_param(
            "top_logprobs",
            "top_logprobs needs logprobs: true",
        ));
    }
    let chat = state.engine().model().clone();
    let messages = messages_from_openai(&request.messages)?;
    let prompt = chat.encode_prompt(&chat.render_chat(&messages)?)?;
    let n = params.n;
    let logprobs = params.sampling.logprobs;
    let events = submit(&state, prompt, params)?;
    let (id, created, model) = (new_id("chatcmpl"), unix_now(), fields.model.clone());
    if !fields.stream {
        let done = collect(events, n, logprobs).await?;
        let answer = ChatCompletion::new(id, created, model, done.choices, done.usage);
        return Ok(Json(answer).into_response());
    }
    let stream = ChunkStream {
        events,
        id,
        created,
        model,
        started: vec![false; n],
        include_usage: fields.include_usage(),
        prompt_tokens: 0,
        finished: false,
    };
    let payloads = stream::unfold(stream, |mut s| async move {
        let batch = s.next_payloads().await?;
        Some((stream::iter(batch), s))
    })
    .flatten();
    Ok(sse(payloads))
}

/// Turns engine events into `chat.completion.chunk` payloads.
struct ChunkStream {
    events: Events,
    id: String,
    created: u64,
    model: String,
    started: Vec<bool>,
    include_usage: bool,
    prompt_tokens: usize,
    finished: bool,
}

impl ChunkStream {
    fn chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> serde_json::Value {
        serde_json::to_value(ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: system_fingerprint(),
            choices,
            usage,
        })
        .expect("chunks serialise")
    }

    /// The payloads of the next event; `None` when the stream is over.
    async fn next_payloads(&mut self) -> Option<Vec<Result<serde_json::Value, ApiError>>> {
        if self.finished {
            return None;
        }
        loop {
            let event = match self.events.next().await {
                Ok(event) => event,
                Err(e) => {
                    self.finished = true;
                    return Some(vec![Err(e)]);
                }
            };
            match event {
                EngineEvent::Started { prompt_tokens } => self.prompt_tokens = prompt_tokens,
                EngineEvent::Token { choice, output } => {
                    let first = !std::mem::replace(&mut self.started[choice], true);
                    if output.text.is_empty() && output.finish.is_none() && !first {
                        continue; // held back (UTF-8 or a possible stop string)
                    }
                    let delta = ChatDelta {
                        role: first.then(|| "assistant".to_string()),
                        content: (!output.text.is_empty() || first).then_some(output.text),
                    };
                    let choice = ChatChunkChoice {
                        index: choice,
                        delta,
                        logprobs: output
                            .logprob
                            .map(|lp| ChoiceLogprobs { content: vec![lp] }),
                        finish_reason: output.finish,
                    };
                    return Some(vec![Ok(self.chunk(vec![choice], None))]);
                }
                EngineEvent::Done { completion_tokens } => {
                    self.finished = true;
                    if !self.include_usage {
                        return None;
                    }
                    let usage = Usage::new(self.prompt_tokens, completion_tokens);
                    return Some(vec![Ok(self.chunk(Vec::new(), Some(usage)))]);
                }
                EngineEvent::Failed(e) => {
                    self.finished = true;
                    return Some(vec![Err(e.into())]);
                }
            }
        }
    }
}

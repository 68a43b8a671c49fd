//! `POST /v1/completions`: raw text continuation, no chat template.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream;
use helixflow_core::completion::{
    new_id, system_fingerprint, unix_now, ChoiceLogprobs, TextCompletion, Usage,
};
use helixflow_core::engine::EngineEvent;
use helixflow_core::sampling::MAX_TOP_LOGPROBS;
use serde_json::{json, Value};

use super::generate::{collect, sse, submit, Events};
use crate::error::ApiError;
use crate::state::AppState;
use crate::wire::{parse_body, CompletionRequest};

/// The prompt's token ids: a string, a list with one string, or token ids.
fn prompt_ids(state: &AppState, prompt: &Value) -> Result<Vec<u32>, ApiError> {
    let bad = || {
        ApiError::invalid_param(
            "prompt",
            "prompt must be a string, a list with one string, or a list of token ids \
             (one prompt per request)",
        )
    };
    let chat = state.engine().model();
    match prompt {
        Value::String(text) => Ok(chat.encode_prompt(text)?),
        Value::Array(items) => match items.as_slice() {
            [Value::String(text)] => Ok(chat.encode_prompt(text)?),
            [Value::Array(ids)] => token_ids(ids).ok_or_else(bad),
            ids if ids.iter().all(Value::is_u64) => token_ids(ids).ok_or_else(bad),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

fn token_ids(values: &[Value]) -> Option<Vec<u32>> {
    values
        .iter()
        .map(|v| v.as_u64().and_then(|id| u32::try_from(id).ok()))
        .collect()
}

/// Continues a prompt, as one JSON object or an SSE stream.
pub(crate) async fn completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: CompletionRequest = parse_body(body)?;
    let fields = &request.fields;
    if fields.model != state.chat_model_id() {
        return Err(ApiError::unknown_model(&fields.model));
    }
    if request.echo {
        return Err(ApiError::invalid_param("echo", "echo is not supported"));
    }
    let top = request.logprobs.unwrap_or(0);
    if top > MAX_TOP_LOGPROBS {
        return Err(ApiError::invalid_param(
            "logprobs",
            format!("logprobs must be at most {MAX_TOP_LOGPROBS}"),
        ));
    }
    let params = fields.params(request.logprobs.is_some(), top)?;
    let prompt = prompt_ids(&state, &request.prompt)?;
    if prompt.is_empty() {
        return Err(ApiError::invalid_param("prompt", "the prompt is empty"));
    }
    let (n, logprobs) = (params.n, params.sampling.logprobs);
    let events = submit(&state, prompt, params)?;
    let (id, created, model) = (new_id("cmpl"), unix_now(), fields.model.clone());
    if !fields.stream {
        let done = collect(events, n, logprobs).await?;
        let answer = TextCompletion::new(id, created, model, done.choices, done.usage);
        return Ok(Json(answer).into_response());
    }
    let header = json!({
        "id": id, "object": "text_completion", "created": created, "model": model,
        "system_fingerprint": system_fingerprint(),
    });
    let state = TextStream {
        events,
        header,
        include_usage: fields.include_usage(),
        prompt_tokens: 0,
        finished: false,
    };
    let payloads = stream::unfold(state, |mut s| async move {
        let item = s.next_payload().await?;
        Some((item, s))
    });
    Ok(sse(payloads))
}

/// Turns engine events into streamed `text_completion` payloads.
struct TextStream {
    events: Events,
    header: Value,
    include_usage: bool,
    prompt_tokens: usize,
    finished: bool,
}

impl TextStream {
    fn payload(&self, choices: Value, usage: Option<Usage>) -> Value {
        let mut value = self.header.clone();
        value["choices"] = choices;
        if let Some(usage) = usage {
            value["usage"] = serde_json::to_value(usage).expect("usage serialises");
        }
        value
    }

    async fn next_payload(&mut self) -> Option<Result<Value, ApiError>> {
        if self.finished {
            return None;
        }
        loop {
            let event = match self.events.next().await {
                Ok(event) => event,
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            };
            match event {
                EngineEvent::Started { prompt_tokens } => self.prompt_tokens = prompt_tokens,
                EngineEvent::Token { choice, output } => {
                    if output.text.is_empty() && output.finish.is_none() {
                        continue;
                    }
                    let logprobs = output
                        .logprob
                        .map(|lp| ChoiceLogprobs { content: vec![lp] });
                    let choices = json!([{
                        "index": choice,
                        "text": output.text,
                        "logprobs": logprobs,
                        "finish_reason": output.finish,
                    }]);
                    return Some(Ok(self.payload(choices, None)));
                }
                EngineEvent::Done { completion_tokens } => {
                    self.finished = true;
                    if !self.include_usage {
                        return None;
                    }
                    let usage = Usage::new(self.prompt_tokens, completion_tokens);
                    return Some(Ok(self.payload(json!([]), Some(usage))));
                }
                EngineEvent::Failed(e) => {
                    self.finished = true;
                    return Some(Err(e.into()));
                }
            }
        }
    }
}

//! `POST /v1/chat/completions`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use helixflow_core::chat_template::messages_from_openai;
use helixflow_core::completion::{
    new_id, system_fingerprint, unix_now, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
    ChatDelta, ChoiceLogprobs, TokenLogprob, Usage,
};
use helixflow_core::generation::TokenOutput;
use helixflow_core::platform::Caller;

use super::generate::{collect, sse, stream_payloads, submit, Origin, StreamShape};
use crate::auth::check_model;
use crate::error::{ApiError, ErrorBody};
use crate::ratelimit;
use crate::state::AppState;
use crate::wire::{parse_body, ChatRequest};

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
    let request: ChatRequest = parse_body(body)?;
    let fields = &request.fields;
    check_model(&caller, &fields.model)?;
    let engine = state.chat_engine(&fields.model)?;
    let params = fields.params(request.logprobs, request.top_logprobs.unwrap_or(0))?;
    if request.top_logprobs.is_some_and(|n| n > 0) && !request.logprobs {
        return Err(ApiError::invalid_param(
            "top_logprobs",
            "top_logprobs needs logprobs: true",
        ));
    }
    let chat = engine.model();
    let messages = messages_from_openai(&request.messages)?;
    let prompt = chat.encode_prompt(&chat.render_chat(&messages)?)?;
    let n = params.n;
    let logprobs = params.sampling.logprobs;
    let id = new_id("chatcmpl");
    let origin = Origin {
        caller: &caller,
        endpoint: "/v1/chat/completions",
        request_id: &id,
    };
    let events = submit(&state, origin, engine, prompt, params).await?;
    let limits = events.limits();
    let (created, model) = (unix_now(), fields.model.clone());
    if !fields.stream {
        let done = collect(events, n, logprobs).await?;
        let answer = ChatCompletion::new(id.clone(), created, model, done.choices, done.usage);
        let response = Json(answer).into_response();
        return Ok(ratelimit::with_headers(response, &limits, &id));
    }
    let shape = ChunkShape {
        id: id.clone(),
        created,
        model,
        started: vec![false; n],
        pending: vec![Vec::new(); n],
    };
    let response = sse(stream_payloads(events, fields.include_usage(), shape));
    Ok(ratelimit::with_headers(response, &limits, &id))
}

/// `chat.completion.chunk` payloads: the role in each choice's first chunk, then text deltas.
struct ChunkShape {
    id: String,
    created: u64,
    model: String,
    started: Vec<bool>,
    /// Each choice's logprobs of tokens whose text is still held back.
    pending: Vec<Vec<TokenLogprob>>,
}

impl ChunkShape {
    fn chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> String {
        serde_json::to_string(&ChatCompletionChunk {
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
}

impl StreamShape for ChunkShape {
    fn token(&mut self, choice: usize, output: TokenOutput) -> Option<String> {
        let pending = self.pending.get_mut(choice)?;
        pending.extend(output.logprob);
        let first = !std::mem::replace(self.started.get_mut(choice)?, true);
        if output.text.is_empty() && output.finish.is_none() && !first {
            // Held back (UTF-8 or a possible stop string): its logprob goes with the text.
            return None;
        }
        let tokens = std::mem::take(pending);
        let delta = ChatDelta {
            role: first.then(|| "assistant".to_string()),
            content: (!output.text.is_empty() || first).then_some(output.text),
        };
        let choice = ChatChunkChoice {
            index: choice,
            delta,
            logprobs: (!tokens.is_empty()).then_some(ChoiceLogprobs { content: tokens }),
            finish_reason: output.finish,
        };
        Some(self.chunk(vec![choice], None))
    }

    fn usage(&self, usage: Usage) -> String {
        self.chunk(Vec::new(), Some(usage))
    }
}

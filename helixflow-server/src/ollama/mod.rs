//! Ollama's API, for Open WebUI, the `ollama` clients and editor plug-ins: `GET /` ("Ollama
//! is running"), `/api/version`, `/api/tags`, `/api/ps`, `/api/show`, `/api/chat` and
//! `/api/generate` (NDJSON streams unless `stream: false`), `/api/embed` and the older
//! `/api/embeddings`, and `/api/pull` (streamed status lines). Requests go the way every request goes (keys, limits, usage records);
//! errors have Ollama's shape, `{"error": "…"}`.

mod answer;
mod wire;

use std::convert::Infallible;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::stream::{self, StreamExt};
use helixflow_core::chat_model::ChatModel;
use helixflow_core::chat_template::ChatMessage;
use helixflow_core::completion::new_id;
use helixflow_core::embeddings::EmbeddingInput;
use helixflow_core::platform::Caller;
use helixflow_core::registry::{KeepAlive, ModelState, ModelStatus, ServedModel};
use helixflow_core::request::{GenerationOptions, GenerationRequest, TextPrompt};
use helixflow_core::streaming::{AnswerBuilder, AnswerPart};
use helixflow_core::Error;
use serde_json::{json, Value};

use crate::auth::check_model;
use crate::error::ApiError;
use crate::inference::{answer_with, embed_for, prepare_for, Events, Origin};
use crate::ratelimit;
use crate::state::AppState;
use crate::wire::parse_body;
use answer::{created_at, timestamp, OllamaShaper, Shape};
use wire::OllamaRequest;

/// The Ollama version HelixFlow answers as (clients check it for features).
const OLLAMA_VERSION: &str = "0.12.0";

/// `GET /`.
pub(crate) async fn root() -> &'static str {
    "Ollama is running"
}

/// `GET /api/version`.
pub(crate) async fn version() -> Json<Value> {
    Json(json!({"version": OLLAMA_VERSION}))
}

/// A model as Ollama lists it: `served` where it is loaded.
fn model_entry(status: &ModelStatus, served: Option<&ServedModel>) -> Value {
    let family = match served {
        Some(ServedModel::Chat(engine)) => engine.model().model().shape().architecture.clone(),
        Some(ServedModel::Embedding(_)) => "bert".to_owned(),
        None => String::new(),
    };
    let modified = status
        .loaded_at
        .map_or_else(created_at, |t| timestamp(t, 0));
    json!({"name": status.id, "model": status.id, "modified_at": modified,
        "size": status.footprint.weights_bytes, "digest": "",
        "details": {"parent_model": "", "format": "gguf", "family": family,
        "families": [family], "parameter_size": "", "quantization_level": ""}})
}

/// The models `caller` may use, loaded or not (`loaded_only`: loaded).
fn listed(state: &AppState, caller: &Caller, loaded_only: bool) -> Vec<Value> {
    let models = state.models();
    models
        .list()
        .iter()
        .filter(|m| caller.allows_model(&m.id))
        .filter(|m| !loaded_only || m.state == ModelState::Loaded)
        .map(|m| {
            let served = models.get(&m.id);
            let mut entry = model_entry(m, served.as_ref());
            if loaded_only {
                // Ollama's far-off expiry for a model kept until unloaded by hand.
                entry["expires_at"] = json!(m
                    .expires_at
                    .map_or_else(|| "2318-01-01T00:00:00Z".to_owned(), |t| timestamp(t, 0)));
                entry["size"] = json!(m.footprint.total());
                entry["size_vram"] = json!(0);
            }
            entry
        })
        .collect()
}

/// `GET /api/tags`: the models, loaded or loadable.
pub(crate) async fn tags(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    Json(json!({"models": listed(&state, &caller, false)}))
}

/// `GET /api/ps`: the loaded models, their memory and when they will be unloaded.
pub(crate) async fn ps(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    Json(json!({"models": listed(&state, &caller, true)}))
}

/// `POST /api/show`: a model's details, template and capabilities.
pub(crate) async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body: Value = parse_body(body)?;
    let name = body
        .get("model")
        .or_else(|| body.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid_param("model", "model is required"))?;
    check_model(&caller, name)?;
    let lease = state.lease(name).await?;
    let model = lease.model();
    let status = state
        .models()
        .status(name)
        .ok_or_else(|| ApiError::unknown_model(name))?;
    let entry = model_entry(&status, Some(model));
    let (capabilities, template, context) = match model {
        ServedModel::Chat(engine) => {
            let chat = engine.model();
            (
                json!(["completion", "tools"]),
                chat.chat_template_source().unwrap_or_default().to_owned(),
                chat.context_length(),
            )
        }
        ServedModel::Embedding(embedder) => {
            (json!(["embedding"]), String::new(), embedder.max_seq_len())
        }
    };
    let family = entry["details"]["family"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok(Json(
        json!({"modelfile": "", "parameters": "", "template": template,
        "details": entry["details"], "capabilities": capabilities,
        "model_info": {"general.architecture": family, format!("{family}.context_length"): context},
        "modified_at": entry["modified_at"]}),
    ))
}

/// `POST /api/chat`.
pub(crate) async fn chat(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (request, messages) = wire::chat_request(&parse_body(body)?)?;
    if messages.is_empty() {
        let empty = json!({"role": "assistant", "content": ""});
        return load_or_unload(&state, &caller, &request, "message", empty).await;
    }
    let build = move |chat: &ChatModel, options: &GenerationOptions| {
        GenerationRequest::chat(chat, &messages, options, false, None)
    };
    answer(&state, &caller, request, (Shape::Chat, started), build).await
}

/// `POST /api/generate`: a prompt (with the model's template and `system`, unless `raw`);
/// an empty prompt just says the model is loaded.
pub(crate) async fn generate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (request, prompt, system, raw) = wire::generate_request(&parse_body(body)?)?;
    if prompt.is_empty() {
        return load_or_unload(&state, &caller, &request, "response", json!("")).await;
    }
    let build = move |chat: &ChatModel, options: &GenerationOptions| {
        if raw {
            return GenerationRequest::text(chat, TextPrompt::Text(prompt), options, None, false);
        }
        let messages: Vec<ChatMessage> = system
            .map(|s| ChatMessage::new("system", s))
            .into_iter()
            .chain([ChatMessage::new("user", prompt)])
            .collect();
        GenerationRequest::chat(chat, &messages, options, false, None)
    };
    answer(&state, &caller, request, (Shape::Generate, started), build).await
}

/// A request with nothing to answer: loads the model (starting its `keep_alive`), or with
/// `keep_alive: 0` unloads it, as Ollama's clients do to manage memory. `field` is the
/// answer's field (`message` or `response`) and `empty` its empty value.
async fn load_or_unload(
    state: &AppState,
    caller: &Caller,
    request: &OllamaRequest,
    field: &str,
    empty: Value,
) -> Result<Response, ApiError> {
    let model = &request.model;
    check_model(caller, model)?;
    let reason = if request.keep_alive == Some(KeepAlive::NONE) {
        match state.models().unload(model) {
            Ok(_) => {}
            // Not loaded: nothing to unload, if it is a model at all.
            Err(Error::ModelNotFound(_)) if state.models().knows(model) => {}
            Err(e) => return Err(ApiError::from(e)),
        }
        "unload"
    } else {
        let lease = state.lease(model).await?;
        if let Some(keep_alive) = request.keep_alive {
            lease.set_keep_alive(keep_alive);
        }
        "load"
    };
    let mut body = json!({"model": model, "created_at": created_at(), "done": true,
        "done_reason": reason});
    body[field] = empty;
    Ok(Json(body).into_response())
}

/// Builds the core's request with `build` (kept within `num_ctx`), submits it and answers it
/// whole or as NDJSON lines.
async fn answer(
    state: &AppState,
    caller: &Caller,
    request: OllamaRequest,
    (shape, started): (Shape, Instant),
    build: impl FnOnce(&ChatModel, &GenerationOptions) -> helixflow_core::Result<GenerationRequest>
        + Send
        + 'static,
) -> Result<Response, ApiError> {
    let OllamaRequest {
        model,
        options,
        stream,
        num_ctx,
        keep_alive,
    } = request;
    let (engine, prepared) = prepare_for(state, caller, &model, move |chat| {
        let mut prepared = build(chat, &options)?;
        if let Some(num_ctx) = num_ctx.filter(|&n| n < chat.context_length()) {
            fit_context(&mut prepared, num_ctx)?;
        }
        Ok(prepared)
    })
    .await?;
    if let Some(keep_alive) = keep_alive {
        engine.set_keep_alive(keep_alive);
    }
    let mut shaper = OllamaShaper::new(shape, model.clone(), started);
    let builder = prepared.answer_builder(model, stream, true);
    let endpoint = match shape {
        Shape::Chat => "/api/chat",
        Shape::Generate => "/api/generate",
    };
    answer_with(
        state,
        (caller, endpoint),
        engine,
        prepared,
        builder,
        |events, builder| async move {
            if stream {
                return Ok(ndjson(events, builder, shaper));
            }
            let (answer, first_token) = events.answer_timed(builder).await?;
            Ok(Json(shaper.whole(&answer, first_token)).into_response())
        },
    )
    .await
}

/// Keeps `prepared` within a context of `num_ctx` tokens: its answer may take what its prompt
/// leaves.
fn fit_context(prepared: &mut GenerationRequest, num_ctx: usize) -> helixflow_core::Result<()> {
    let prompt = prepared.prompt.len();
    let room = num_ctx
        .checked_sub(prompt)
        .filter(|&r| r > 0)
        .ok_or_else(|| {
            Error::invalid_field(
                "options.num_ctx",
                format!("the prompt ({prompt} tokens) does not fit num_ctx ({num_ctx})"),
            )
        })?;
    let max = &mut prepared.params.max_tokens;
    *max = Some(max.map_or(room, |m| m.min(room)));
    Ok(())
}

/// A streamed answer as NDJSON; a failure mid-stream is an `{"error": …}` line, after which
/// the stream ends.
fn ndjson(events: Events, builder: AnswerBuilder, shaper: OllamaShaper) -> Response {
    let start = Some((events, builder, shaper));
    let lines = stream::unfold(start, |state| async move {
        let (mut events, mut builder, mut shaper) = state?;
        match events.next_part(&mut builder).await {
            Ok(Some(AnswerPart::Chunk(chunk))) => {
                let line = shaper.chunk(&chunk);
                Some((line, Some((events, builder, shaper))))
            }
            Ok(Some(AnswerPart::Whole(_))) => Some((None, Some((events, builder, shaper)))),
            Ok(None) => None,
            Err(e) => Some((Some(json!({"error": e.message})), None)),
        }
    })
    .filter_map(|line| async move { line });
    ndjson_body(lines)
}

/// A response of JSON lines, one per value of `lines`.
fn ndjson_body(lines: impl futures_util::Stream<Item = Value> + Send + 'static) -> Response {
    let lines = lines.map(|line| Ok::<_, Infallible>(Bytes::from(format!("{line}\n"))));
    let mut response = Body::from_stream(lines).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        "application/x-ndjson".parse().expect("a valid header"),
    );
    response
}

/// Status lines of a pull, sent on as they come.
struct PullProgress(tokio::sync::mpsc::UnboundedSender<String>);

impl helixflow_core::source::Progress for PullProgress {
    fn message(&self, msg: &str) {
        let _ = self.0.send(msg.to_owned());
    }

    fn show_download_bars(&self) -> bool {
        false
    }
}

/// `POST /api/pull`: fetches a model into the cache without loading it (a model already
/// there is verified), as NDJSON status lines ending with `success` unless `stream: false`.
/// Downloading needs a server started with `--allow-pull`.
pub(crate) async fn pull(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: Value = parse_body(body)?;
    let fields = wire::fields(&body, &["model", "name", "stream", "insecure"])?;
    let model = fields
        .get("model")
        .or_else(|| fields.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid_param("model", "model is required"))?
        .to_owned();
    if fields.get("insecure").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::invalid_param(
            "insecure",
            "insecure pulls are not supported: downloads are verified",
        ));
    }
    let stream = fields
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    check_model(&caller, &model)?;
    if !state.models().knows(&model) {
        return Err(ApiError::unknown_model(&model));
    }
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let registry = state.models().clone();
    let task = tokio::task::spawn_blocking(move || registry.pull(&model, &PullProgress(sender)));
    if !stream {
        task.await
            .map_err(|e| ApiError::internal(format!("the pull failed: {e}")))??;
        return Ok(Json(json!({"status": "success"})).into_response());
    }
    let lines = stream::unfold(Some((receiver, task)), |state| async move {
        let (mut receiver, task) = state?;
        match receiver.recv().await {
            Some(message) => Some((json!({"status": message}), Some((receiver, task)))),
            // The pull is over: its sender is gone.
            None => {
                let last = match task.await {
                    Ok(Ok(())) => json!({"status": "success"}),
                    Ok(Err(e)) => json!({"error": ApiError::from(e).message}),
                    Err(e) => json!({"error": format!("the pull failed: {e}")}),
                };
                Some((last, None))
            }
        }
    });
    Ok(ndjson_body(lines))
}

/// `POST /api/embed`: `input` (a string or strings), cut to the model's limit unless
/// `truncate: false`.
pub(crate) async fn embed(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let body: Value = parse_body(body)?;
    let (model, input, truncate) = embed_fields(
        &body,
        "input",
        &["model", "input", "truncate", "keep_alive"],
    )?;
    let keep_alive = wire::keep_alive(&body)?;
    let (vectors, tokens, limits, id) = embed_texts(
        &state,
        &caller,
        (&model, keep_alive),
        input,
        truncate,
        "/api/embed",
    )
    .await?;
    let response = Json(json!({"model": model, "embeddings": vectors,
        "total_duration": started.elapsed().as_nanos() as u64, "load_duration": 0,
        "prompt_eval_count": tokens}));
    Ok(ratelimit::with_headers(
        response.into_response(),
        &limits,
        &id,
    ))
}

/// `POST /api/embeddings` (the older route): one `prompt`'s `embedding`.
pub(crate) async fn embeddings(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: Value = parse_body(body)?;
    let (model, input, _) = embed_fields(&body, "prompt", &["model", "prompt", "keep_alive"])?;
    let keep_alive = wire::keep_alive(&body)?;
    let (mut vectors, _, limits, id) = embed_texts(
        &state,
        &caller,
        (&model, keep_alive),
        input,
        true,
        "/api/embeddings",
    )
    .await?;
    let response = Json(json!({"embedding": vectors.pop().unwrap_or_default()}));
    Ok(ratelimit::with_headers(
        response.into_response(),
        &limits,
        &id,
    ))
}

/// An embedding body's model, texts (from `field`) and `truncate` (default true); any field
/// not in `known` is refused.
fn embed_fields(
    body: &Value,
    field: &str,
    known: &[&str],
) -> Result<(String, Vec<String>, bool), ApiError> {
    let fields = wire::fields(body, known)?;
    let model = fields
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid_param("model", "model is required"))?;
    let texts = match fields.get(field) {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::invalid_param(field, format!("{field} must be a string or strings"))
            })?,
        _ => {
            return Err(ApiError::invalid_param(
                field,
                format!("{field} must be a string or strings"),
            ))
        }
    };
    let truncate = fields
        .get("truncate")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    Ok((model.to_owned(), texts, truncate))
}

/// Embeds `texts` with `model` for `caller`: the vectors, the tokens, the limits and the
/// request's id.
async fn embed_texts(
    state: &AppState,
    caller: &Caller,
    (model, keep_alive): (&str, Option<KeepAlive>),
    texts: Vec<String>,
    truncate: bool,
    endpoint: &'static str,
) -> Result<
    (
        Vec<Vec<f32>>,
        usize,
        Vec<helixflow_core::platform::LimitStatus>,
        String,
    ),
    ApiError,
> {
    check_model(caller, model)?;
    let embedder = state.embedding_lease(model).await?;
    if let Some(keep_alive) = keep_alive {
        embedder.set_keep_alive(keep_alive);
    }
    let id = new_id("embd");
    let origin = Origin {
        caller,
        endpoint,
        request_id: &id,
    };
    let (result, limits) = embed_for(
        state,
        origin,
        embedder,
        EmbeddingInput::Texts(texts),
        truncate,
    )
    .await?;
    Ok((result.vectors, result.prompt_tokens, limits, id))
}

/// Gives every error answer of the Ollama routes Ollama's shape, `{"error": "…"}`.
pub(crate) async fn errors(request: Request, next: Next) -> Response {
    crate::error::reshape(
        next.run(request).await,
        |_, message| json!({"error": message}),
    )
    .await
}

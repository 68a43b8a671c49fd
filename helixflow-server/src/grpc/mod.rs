//! The gRPC API: the inference service (`proto/helixflow/v1/inference.proto`) over the same
//! models, parameters and errors as the HTTP routes, the administration services `Auth`,
//! `Models` and `Monitoring` (`admin.proto`), and the standard health service.

mod admin;
mod convert;
mod models;
mod server;

pub use admin::{AuthService, MonitoringService};
pub use models::ModelsService;

pub use crate::state::Phase;
pub use server::serve_grpc;

use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use futures_util::stream::{self, Stream};
use helixflow_core::completion::{new_id, Usage};
use helixflow_core::embeddings::EmbeddingInput;
use helixflow_core::engine::EngineEvent;
use helixflow_core::generation::TokenOutput;
use helixflow_core::platform::Caller;
use helixflow_core::registry::{ModelLease, ServedModel};
use helixflow_core::reply::{split_reply, ReplySyntax};
use helixflow_core::request::{legacy_logprobs, GenerationRequest, TextPrompt};
use helixflow_core::streaming::ChunkHeader;
use tonic::{Request, Response, Status};

use crate::auth::{bearer, check_model, inference_caller};
use crate::error::ApiError;
use crate::inference::{embed_for, submit, Events, Origin};
use crate::state::AppState;

/// The generated protobuf messages, service traits and clients.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("helixflow.v1");
}

use proto::generation_event::Event;
use proto::inference_server::Inference;

/// The inference service. Until the models are loaded (`state` empty) every call is
/// `UNAVAILABLE`, as the HTTP API answers 503.
#[derive(Clone)]
pub struct InferenceService {
    state: Arc<OnceLock<AppState>>,
}

impl InferenceService {
    /// A service that answers once `state` is set; its streams end with a shutdown error
    /// when the state's [`Phase`] reaches [`Phase::Cut`].
    pub fn new(state: Arc<OnceLock<AppState>>) -> Self {
        Self { state }
    }

    /// The loaded state and the authenticated caller, who must have the inference scope and,
    /// when the call names one, access to `model`.
    async fn authorize<T>(
        &self,
        request: &Request<T>,
        model: Option<&str>,
    ) -> Result<(&AppState, Caller), Status> {
        let state = self
            .state
            .get()
            .ok_or_else(|| ApiError::overloaded("the models are still loading"))?;
        let metadata = request.metadata().get("authorization");
        let token = bearer(metadata.and_then(|v| v.to_str().ok()));
        let caller = inference_caller(state, token).await?;
        if let Some(model) = model {
            check_model(&caller, model)?;
        }
        Ok((state, caller))
    }
}

/// A server-streamed generation.
type EventStream = Pin<Box<dyn Stream<Item = Result<proto::GenerationEvent, Status>> + Send>>;

fn event(event: Event) -> proto::GenerationEvent {
    proto::GenerationEvent { event: Some(event) }
}

/// Submits `request` for `caller` at `endpoint` and streams its events.
async fn generate(
    state: &AppState,
    (caller, endpoint): (&Caller, &'static str),
    engine: ModelLease,
    request: GenerationRequest,
    model: String,
) -> Result<EventStream, Status> {
    let ChunkHeader { id, created, .. } = request.header(model.clone());
    let replies = Replies::new(request.reply, request.params.n);
    let origin = Origin {
        caller,
        endpoint,
        request_id: &id,
    };
    let events = submit(state, origin, engine, request).await?;
    Ok(event_stream(events, id, created, model, replies))
}

/// Each chat choice's text, gathered to be read as a message ([`proto::Reply`]) at its end,
/// when the answer may hold more than content (tool calls, thinking).
struct Replies {
    syntax: ReplySyntax,
    texts: Vec<String>,
}

impl Replies {
    fn new(syntax: ReplySyntax, n: usize) -> Self {
        let texts = if syntax.is_plain() {
            Vec::new()
        } else {
            vec![String::new(); n]
        };
        Self { syntax, texts }
    }

    /// Takes choice `choice`'s token; its reply once the choice is over.
    fn token(&mut self, choice: usize, output: &TokenOutput) -> Option<proto::Reply> {
        let text = self.texts.get_mut(choice)?;
        text.push_str(&output.text);
        let finish = output.finish?;
        let (reply, called) = split_reply(self.syntax, &std::mem::take(text));
        Some(convert::reply(
            choice,
            reply,
            Some(finish.after_calls(called)),
        ))
    }
}

/// The engine's events as protobuf events: `started`, the tokens, `finished`; an error ends
/// the stream with its status. Dropping the stream (the client went away) cancels the
/// generation.
fn event_stream(
    events: Events,
    id: String,
    created: u64,
    model: String,
    replies: Replies,
) -> EventStream {
    // The id and model go out once, with `started`.
    let start = Some((events, Some((id, model)), replies, None));
    let stream = stream::unfold(start, move |state| async move {
        let (mut events, mut header, mut replies, reply) = state?;
        if let Some(reply) = reply {
            let event = event(Event::Reply(reply));
            return Some((Ok(event), Some((events, header, replies, None))));
        }
        // At the end of a shutdown's grace period this is the shutdown error.
        let next = events.next().await;
        let item = match next {
            Ok(EngineEvent::Started { prompt_tokens }) => {
                let (id, model) = header.take().unwrap_or_default();
                Ok(event(Event::Started(proto::Started {
                    id,
                    model,
                    created,
                    prompt_tokens: prompt_tokens as u32,
                })))
            }
            Ok(EngineEvent::Token { choice, output }) => {
                let reply = replies.token(choice, &output);
                let token = event(Event::Token(convert::token(choice, output)));
                return Some((Ok(token), Some((events, header, replies, reply))));
            }
            Ok(EngineEvent::Done { completion_tokens }) => {
                // The prompt count came with `Started`; the final usage repeats it.
                let usage = Usage::new(events.prompt_tokens(), completion_tokens);
                let finished = proto::Finished {
                    usage: Some(convert::usage(usage)),
                };
                return Some((Ok(event(Event::Finished(finished))), None));
            }
            Ok(EngineEvent::Failed(e)) => Err(Status::from(ApiError::from(e))),
            Err(e) => Err(Status::from(e)),
        };
        let next = item.is_ok().then_some((events, header, replies, None));
        Some((item, next))
    });
    Box::pin(stream)
}

#[tonic::async_trait]
impl Inference for InferenceService {
    type ChatStream = EventStream;
    type CompleteStream = EventStream;

    async fn chat(
        &self,
        request: Request<proto::ChatRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let (state, caller) = self
            .authorize(&request, Some(&request.get_ref().model))
            .await?;
        let request = request.into_inner();
        let engine = state.chat_lease(&request.model).await?;
        let chat = state.chat_of(&engine)?.model().clone();
        let messages = convert::messages(request.messages);
        let (options, logprobs, top_logprobs) =
            convert::options(request.options).map_err(ApiError::from)?;
        let prepared = state
            .prepare(move || {
                GenerationRequest::chat(&chat, &messages, &options, logprobs, top_logprobs)
            })
            .await?;
        let origin = (&caller, "/helixflow.v1.Inference/Chat");
        let stream = generate(state, origin, engine, prepared, request.model).await?;
        Ok(Response::new(stream))
    }

    async fn complete(
        &self,
        request: Request<proto::CompletionRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let (state, caller) = self
            .authorize(&request, Some(&request.get_ref().model))
            .await?;
        let request = request.into_inner();
        let engine = state.chat_lease(&request.model).await?;
        let prompt = match request.prompt {
            Some(proto::completion_request::Prompt::Text(text)) => TextPrompt::Text(text),
            Some(proto::completion_request::Prompt::Tokens(tokens)) => {
                TextPrompt::Tokens(tokens.ids)
            }
            None => TextPrompt::Tokens(Vec::new()),
        };
        let (options, logprobs, top_logprobs) =
            convert::options(request.options).map_err(ApiError::from)?;
        let logprobs = legacy_logprobs(logprobs, top_logprobs).map_err(ApiError::from)?;
        let chat = state.chat_of(&engine)?.model().clone();
        let prepared = state
            .prepare(move || GenerationRequest::text(&chat, prompt, &options, logprobs, false))
            .await?;
        let origin = (&caller, "/helixflow.v1.Inference/Complete");
        let stream = generate(state, origin, engine, prepared, request.model).await?;
        Ok(Response::new(stream))
    }

    async fn embed(
        &self,
        request: Request<proto::EmbedRequest>,
    ) -> Result<Response<proto::EmbedResponse>, Status> {
        let (state, caller) = self
            .authorize(&request, Some(&request.get_ref().model))
            .await?;
        let request = request.into_inner();
        let model = state.embedding_lease(&request.model).await?;
        let inputs = match (request.texts.is_empty(), request.token_inputs.is_empty()) {
            (false, false) => {
                return Err(ApiError::invalid_param(
                    "input",
                    "give texts or token_inputs, not both",
                )
                .into())
            }
            (true, false) => {
                EmbeddingInput::TokenIds(request.token_inputs.into_iter().map(|t| t.ids).collect())
            }
            _ => EmbeddingInput::Texts(request.texts),
        };
        let id = new_id("req");
        let origin = Origin {
            caller: &caller,
            endpoint: "/helixflow.v1.Inference/Embed",
            request_id: &id,
        };
        let (result, _) = embed_for(state, origin, model, inputs, request.truncate).await?;
        Ok(Response::new(proto::EmbedResponse {
            model: request.model,
            embeddings: result
                .vectors
                .into_iter()
                .map(|values| proto::Embedding { values })
                .collect(),
            usage: Some(convert::usage(Usage::new(result.prompt_tokens, 0))),
        }))
    }

    async fn list_models(
        &self,
        request: Request<proto::ListModelsRequest>,
    ) -> Result<Response<proto::ListModelsResponse>, Status> {
        let (state, caller) = self.authorize(&request, None).await?;
        let models = state
            .models()
            .loaded()
            .iter()
            .filter(|m| caller.allows_model(m.id()))
            .map(|m| proto::Model {
                id: m.id().to_string(),
                kind: match m {
                    ServedModel::Chat(_) => "chat",
                    ServedModel::Embedding(_) => "embedding",
                }
                .to_string(),
                created: state.started(),
                owned_by: "helixflow".to_string(),
            })
            .collect();
        Ok(Response::new(proto::ListModelsResponse { models }))
    }
}

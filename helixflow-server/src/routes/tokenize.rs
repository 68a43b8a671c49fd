//! `POST /tokenize` and `POST /detokenize`, as vLLM serves them: a prompt (or a conversation,
//! rendered by the model's chat template) as the token ids the model would see, and token ids
//! back as text, so that clients can count and budget tokens.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::{Extension, Json};
use helixflow_core::chat_template::messages_from_openai;
use helixflow_core::platform::Caller;
use helixflow_core::Error;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::check_model;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::wire::parse_body;

/// `POST /tokenize`: a `prompt`, or chat `messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenizeRequest {
    /// The chat model whose tokenizer (and template) to use.
    model: String,
    /// Text to tokenise (give this or `messages`).
    prompt: Option<String>,
    /// A conversation, rendered by the model's chat template ready for the answer.
    #[schema(value_type = Option<Vec<Object>>)]
    messages: Option<serde_json::Value>,
    /// With `prompt`: add the model's beginning-of-sequence token as a request would
    /// (default true).
    add_special_tokens: Option<bool>,
}

/// The `POST /tokenize` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TokenizeResponse {
    /// How many tokens.
    count: usize,
    /// The model's context length.
    max_model_len: usize,
    /// The token ids.
    tokens: Vec<u32>,
}

/// `POST /detokenize`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DetokenizeRequest {
    /// The chat model whose tokenizer to use.
    model: String,
    /// Token ids.
    tokens: Vec<u32>,
}

/// The `POST /detokenize` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DetokenizeResponse {
    /// The tokens' text (special tokens included).
    prompt: String,
}

/// The token ids of a prompt or a conversation.
#[utoipa::path(post, path = "/tokenize", tag = "tokens", security(("api_key" = [])),
    request_body = TokenizeRequest,
    responses((status = 200, description = "The token ids", body = TokenizeResponse),
              (status = 400, description = "Neither or both of prompt and messages, or a bad conversation", body = ErrorBody),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 404, description = "No such chat model", body = ErrorBody),
              (status = 413, description = "The body is too large", body = ErrorBody)))]
pub(crate) async fn tokenize(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TokenizeResponse>, ApiError> {
    let request: TokenizeRequest = parse_body(body)?;
    check_model(&caller, &request.model)?;
    let lease = state.chat_lease(&request.model).await?;
    let chat = state.chat_of(&lease)?.model().clone();
    let max_model_len = chat.context_length();
    let tokens = state
        .prepare(move || match (request.prompt, request.messages) {
            (Some(prompt), None) => {
                let mut ids = chat.encode_prompt(&prompt)?;
                let bos = chat.tokenizer().bos_token_id();
                if request.add_special_tokens == Some(false)
                    && chat.tokenizer().add_bos()
                    && ids.first() == bos.as_ref()
                {
                    ids.remove(0);
                }
                Ok(ids)
            }
            (None, Some(messages)) => chat.encode_chat(&messages_from_openai(&messages)?),
            _ => Err(Error::invalid_field(
                "prompt",
                "give `prompt` or `messages`, one of them",
            )),
        })
        .await?;
    Ok(Json(TokenizeResponse {
        count: tokens.len(),
        max_model_len,
        tokens,
    }))
}

/// Token ids as text.
#[utoipa::path(post, path = "/detokenize", tag = "tokens", security(("api_key" = [])),
    request_body = DetokenizeRequest,
    responses((status = 200, description = "The text", body = DetokenizeResponse),
              (status = 400, description = "A token id outside the vocabulary", body = ErrorBody),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 404, description = "No such chat model", body = ErrorBody),
              (status = 413, description = "The body is too large", body = ErrorBody)))]
pub(crate) async fn detokenize(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DetokenizeResponse>, ApiError> {
    let request: DetokenizeRequest = parse_body(body)?;
    check_model(&caller, &request.model)?;
    let lease = state.chat_lease(&request.model).await?;
    let chat = state.chat_of(&lease)?.model().clone();
    let prompt = state
        .prepare(move || {
            let vocab = chat.tokenizer().vocab_size();
            if let Some(bad) = request.tokens.iter().find(|&&id| id as usize >= vocab) {
                return Err(Error::invalid_field(
                    "tokens",
                    format!("token id {bad} is outside the vocabulary of {vocab}"),
                ));
            }
            chat.tokenizer().decode(&request.tokens, false)
        })
        .await?;
    Ok(Json(DetokenizeResponse { prompt }))
}

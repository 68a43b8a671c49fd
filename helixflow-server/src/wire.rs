//! Request bodies of the OpenAI API and their translation into core parameters.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use helixflow_core::request::fields::{check_fields, Endpoint};
use helixflow_core::request::GenerationOptions;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ApiError;

/// Parses a JSON body, turning every failure into a 400 (413 for an oversized body) with
/// OpenAI's error shape rather than axum's plain-text rejections.
pub(crate) fn parse_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| ApiError {
        status: rejection.status(),
        ..ApiError::invalid(rejection.body_text())
    })?;
    serde_json::from_slice(&bytes).map_err(not_valid)
}

/// [`parse_body`] for an OpenAI endpoint: a field HelixFlow would not honour there is a 400
/// naming it (core's [`check_fields`]), never silently dropped.
pub(crate) fn parse_openai_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Result<T, ApiError> {
    let value: serde_json::Value = parse_body(body)?;
    let Some(fields) = value.as_object() else {
        return Err(ApiError::invalid("The request body must be a JSON object"));
    };
    check_fields(endpoint, fields)?;
    serde_json::from_value(value).map_err(not_valid)
}

/// A JSON object body's fields, refusing the first one not in `known` (named in the error,
/// with `refusal(name)` as the message: each API words it its own way).
pub(crate) fn only_fields<'v>(
    body: &'v serde_json::Value,
    known: &[&str],
    refusal: impl Fn(&str) -> String,
) -> Result<&'v serde_json::Map<String, serde_json::Value>, ApiError> {
    let Some(fields) = body.as_object() else {
        return Err(ApiError::invalid("The request body must be a JSON object"));
    };
    match fields.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::invalid_param(unknown, refusal(unknown))),
        None => Ok(fields),
    }
}

fn not_valid(error: serde_json::Error) -> ApiError {
    ApiError::invalid(format!("The request body is not valid: {error}"))
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: bool,
}

/// The generation fields shared by chat and text completions.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct GenerationFields {
    /// The chat model's id.
    pub(crate) model: String,
    /// Answer as a stream of server-sent events, ending with `data: [DONE]`.
    #[serde(default)]
    pub(crate) stream: bool,
    /// `include_usage: true` adds a last chunk with the token counts.
    pub(crate) stream_options: Option<StreamOptions>,
    /// Sampling, length and stop options.
    #[serde(flatten)]
    pub(crate) options: GenerationOptions,
    /// The end user, for the operator's abuse monitoring (HelixFlow records it nowhere).
    #[allow(dead_code)]
    pub(crate) user: Option<String>,
}

impl GenerationFields {
    /// Whether the final SSE chunk carries usage.
    pub(crate) fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ChatRequest {
    #[serde(flatten)]
    pub(crate) fields: GenerationFields,
    /// The conversation: OpenAI chat messages (`role`, and `content` as a string or text
    /// parts).
    pub(crate) messages: serde_json::Value,
    /// Report each generated token's log-probability.
    #[serde(default)]
    pub(crate) logprobs: bool,
    /// With `logprobs`, also the most likely alternatives at each position (0..=20).
    pub(crate) top_logprobs: Option<usize>,
}

/// `POST /v1/completions`: `prompt` is a string, a list of one string, or token ids.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CompletionRequest {
    #[serde(flatten)]
    pub(crate) fields: GenerationFields,
    /// A string, a list with one string, or a list of token ids.
    pub(crate) prompt: serde_json::Value,
    /// The legacy API's logprobs: alternatives per token (0..=20).
    pub(crate) logprobs: Option<usize>,
    /// Echo the prompt before the completion (unsupported: rejected if true).
    #[serde(default)]
    pub(crate) echo: bool,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct EmbeddingRequest {
    /// The embedding model's id.
    pub(crate) model: String,
    /// A string, a list of strings, a list of token ids, or a list of such lists.
    pub(crate) input: serde_json::Value,
    /// `float` (the default) or `base64` (little-endian f32s).
    pub(crate) encoding_format: Option<String>,
    /// Only the model's own dimension is supported; any other value is rejected.
    pub(crate) dimensions: Option<usize>,
    /// Cut inputs longer than the model takes to its limit (an extension, as Hugging Face's
    /// text-embeddings-inference names it); without it they are refused.
    pub(crate) truncate: Option<bool>,
    #[allow(dead_code)]
    pub(crate) user: Option<String>,
}

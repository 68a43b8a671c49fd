//! `POST /v1/embeddings`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use helixflow_core::completion::new_id;
use helixflow_core::embeddings::EmbeddingInput;
use helixflow_core::platform::Caller;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::check_model;
use crate::error::{ApiError, ErrorBody};
use crate::inference::{embed_for, Origin};
use crate::ratelimit;
use crate::state::AppState;
use crate::wire::{parse_openai_body, EmbeddingRequest};
use helixflow_core::request::fields::Endpoint;

/// The inputs of an OpenAI `input` field: a string, a list of strings, a list of token ids,
/// or a list of such lists.
fn inputs(input: &Value) -> Result<EmbeddingInput, ApiError> {
    let bad = || {
        ApiError::invalid_param(
            "input",
            "input must be a string, a list of strings, a list of token ids or a list of such lists",
        )
    };
    let ids = |values: &[Value]| -> Option<Vec<u32>> {
        values
            .iter()
            .map(|v| v.as_u64().and_then(|id| u32::try_from(id).ok()))
            .collect()
    };
    Ok(match input {
        Value::String(s) => EmbeddingInput::Texts(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => {
            EmbeddingInput::Texts(
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
            )
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_u64) => {
            EmbeddingInput::TokenIds(vec![ids(items).ok_or_else(bad)?])
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_array) => {
            let lists: Option<Vec<Vec<u32>>> = items
                .iter()
                .map(|v| v.as_array().and_then(|a| ids(a)))
                .collect();
            EmbeddingInput::TokenIds(lists.ok_or_else(bad)?)
        }
        _ => return Err(bad()),
    })
}

/// One embedding vector: floats, or base64 of little-endian f32s.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum Vector {
    /// `encoding_format: float`.
    Floats(Vec<f32>),
    /// `encoding_format: base64`.
    Base64(String),
}

/// One input's embedding.
#[derive(Serialize, ToSchema)]
pub(crate) struct EmbeddingObject {
    /// Always `embedding`.
    object: &'static str,
    /// The input's position in the request.
    index: usize,
    /// The vector.
    embedding: Vector,
}

/// Tokens the inputs took.
#[derive(Serialize, ToSchema)]
pub(crate) struct EmbeddingUsage {
    /// Tokens in all inputs.
    prompt_tokens: usize,
    /// The same number.
    total_tokens: usize,
}

/// The `POST /v1/embeddings` answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct EmbeddingList {
    /// Always `list`.
    object: &'static str,
    /// One embedding per input, in order.
    data: Vec<EmbeddingObject>,
    /// The model that embedded.
    model: String,
    /// Token counts.
    usage: EmbeddingUsage,
}

/// Embeds the inputs; the vectors come back as float lists or base64 little-endian f32.
#[utoipa::path(post, path = "/embeddings", tag = "embeddings", security(("api_key" = [])),
    request_body = EmbeddingRequest,
    responses((status = 200, description = "One vector per input", body = EmbeddingList),
              (status = 400, description = "Malformed input, more than 2048 inputs or 300,000 tokens, an input longer than the model takes without `truncate`, or unsupported `dimensions`", body = ErrorBody),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 404, description = "No such embedding model", body = ErrorBody),
              (status = 413, description = "The body is too large", body = ErrorBody),
              (status = 429, description = "Over the key's rate limit or budget; retry after `Retry-After` seconds", body = ErrorBody)))]
pub(crate) async fn embeddings(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: EmbeddingRequest = parse_openai_body(body, Endpoint::Embeddings)?;
    check_model(&caller, &request.model)?;
    let lease = state.embedding_lease(&request.model).await?;
    let dimension = state.embedder_of(&lease)?.dimension();
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "encoding_format",
                format!("encoding_format must be `float` or `base64`, not `{other}`"),
            ))
        }
    };
    if let Some(d) = request.dimensions {
        if d != dimension {
            return Err(ApiError::invalid_param(
                "dimensions",
                format!(
                    "this model only gives {}-dimensional embeddings; `dimensions: {d}` is not supported",
                    dimension
                ),
            ));
        }
    }
    let id = new_id("req");
    let origin = Origin {
        caller: &caller,
        endpoint: "/v1/embeddings",
        request_id: &id,
    };
    let input = inputs(&request.input)?;
    let truncate = request.truncate.unwrap_or(false);
    let (result, limits) = embed_for(&state, origin, lease, input, truncate).await?;
    let data = result
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Vector::Floats(v)
            };
            EmbeddingObject {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let answer = Json(EmbeddingList {
        object: "list",
        data,
        model: request.model,
        usage: EmbeddingUsage {
            prompt_tokens: result.prompt_tokens,
            total_tokens: result.prompt_tokens,
        },
    });
    Ok(ratelimit::with_headers(
        answer.into_response(),
        &limits,
        &id,
    ))
}

//! Liveness, readiness and the fallback for unknown routes.

use axum::extract::State;
use axum::Json;
use helixflow_core::registry::ServedModel;
use serde_json::{json, Value};

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process is up")))]
pub(crate) async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the models are loaded (they are before the router exists); each chat model's
/// queue and running requests.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, description = "The models are loaded; each chat model's queue"),
              (status = 503, description = "The models are still loading", body = ErrorBody)))]
pub(crate) async fn ready(State(state): State<AppState>) -> Json<Value> {
    let models: Vec<Value> = state
        .models()
        .loaded()
        .iter()
        .map(|m| match m {
            ServedModel::Chat(engine) => {
                let stats = engine.stats();
                json!({
                    "id": m.id(),
                    "waiting_requests": stats.waiting_requests,
                    "running_requests": stats.running_requests,
                })
            }
            ServedModel::Embedding(_) => json!({"id": m.id()}),
        })
        .collect();
    Json(json!({"status": "ready", "models": models}))
}

/// 404 in OpenAI's error shape for any other path.
pub(crate) async fn not_found(request: axum::extract::Request) -> ApiError {
    let error = ApiError::not_found(request.uri().path());
    discard_body(request, crate::DEFAULT_BODY_LIMIT).await;
    error
}

/// Reads and drops what is left of a refused request's body (up to `limit` bytes), so that
/// its keep-alive connection can carry the next request.
pub(crate) async fn discard_body(request: axum::extract::Request, limit: usize) {
    let _ = axum::body::to_bytes(request.into_body(), limit).await;
}

/// 405 in OpenAI's error shape, for a route that exists under other methods.
pub(crate) async fn method_not_allowed(request: axum::extract::Request) -> ApiError {
    let message = format!(
        "{} is not allowed on {}.",
        request.method(),
        request.uri().path()
    );
    discard_body(request, crate::DEFAULT_BODY_LIMIT).await;
    ApiError {
        status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
        ..ApiError::invalid(message)
    }
}

/// The most header bytes (names and values) a request may carry.
pub(crate) const MAX_HEADER_BYTES: usize = 32 << 10;

/// 431 in OpenAI's error shape for requests whose headers are larger than
/// [`MAX_HEADER_BYTES`] or more than [`crate::MAX_HEADERS`] (far larger ones, and malformed
/// ones, are refused by the HTTP layer itself, without a body).
pub(crate) async fn limit_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    let count = request.headers().len();
    let refusal = if size > MAX_HEADER_BYTES {
        Some(format!(
            "The request's headers are {size} bytes; at most {MAX_HEADER_BYTES} are accepted."
        ))
    } else if count > crate::MAX_HEADERS {
        Some(format!(
            "The request has {count} headers; at most {} are accepted.",
            crate::MAX_HEADERS
        ))
    } else {
        None
    };
    if let Some(message) = refusal {
        discard_body(request, crate::DEFAULT_BODY_LIMIT).await;
        return ApiError {
            status: axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ..ApiError::invalid(message)
        }
        .into_response();
    }
    next.run(request).await
}

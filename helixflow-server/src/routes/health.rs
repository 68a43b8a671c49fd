//! Liveness, readiness and the fallback for unknown routes.

use axum::extract::State;
use axum::http::Uri;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// Liveness: the process answers.
pub(crate) async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the models are loaded (they are before the router exists) and the engine runs.
pub(crate) async fn ready(State(state): State<AppState>) -> Json<Value> {
    let stats = state.engine().stats();
    Json(json!({
        "status": "ready",
        "waiting_requests": stats.waiting_requests,
        "running_requests": stats.running_requests,
    }))
}

/// 404 in OpenAI's error shape for any other path.
pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(uri.path())
}

//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

fn served(state: &AppState) -> Vec<String> {
    let mut ids = vec![state.chat_model_id().to_string()];
    ids.extend(state.embedder().map(|m| m.name().to_string()));
    ids
}

fn model_object(state: &AppState, id: &str) -> Value {
    json!({"id": id, "object": "model", "created": state.started(), "owned_by": "helixflow"})
}

/// The models this server serves.
pub(crate) async fn list(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = served(&state)
        .iter()
        .map(|id| model_object(&state, id))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// One model, or 404.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if served(&state).contains(&id) {
        Ok(Json(model_object(&state, &id)))
    } else {
        Err(ApiError::unknown_model(&id))
    }
}

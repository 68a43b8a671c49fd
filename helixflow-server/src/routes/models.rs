//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

fn model_object(state: &AppState, id: &str) -> Value {
    json!({"id": id, "object": "model", "created": state.started(), "owned_by": "helixflow"})
}

/// The models this server serves.
pub(crate) async fn list(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state
        .models()
        .models()
        .iter()
        .map(|m| model_object(&state, m.id()))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// One model, or 404.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if state.models().get(&id).is_some() {
        Ok(Json(model_object(&state, &id)))
    } else {
        Err(ApiError::unknown_model(&id))
    }
}

//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use helixflow_core::platform::Caller;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// A served model, as OpenAI describes one.
#[derive(Serialize, ToSchema)]
pub(crate) struct ModelObject {
    /// The id requests name it by.
    id: String,
    /// Always `model`.
    object: &'static str,
    /// When the server started serving it (Unix seconds).
    created: u64,
    /// Always `helixflow`.
    owned_by: &'static str,
}

/// The `GET /v1/models` answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct ModelList {
    /// Always `list`.
    object: &'static str,
    /// The served models.
    data: Vec<ModelObject>,
}

fn model_object(state: &AppState, id: &str) -> ModelObject {
    ModelObject {
        id: id.to_string(),
        object: "model",
        created: state.started(),
        owned_by: "helixflow",
    }
}

/// The models this server serves (those the caller's key may use).
#[utoipa::path(get, path = "/models", tag = "models", security(("api_key" = [])),
    responses((status = 200, description = "The served models", body = ModelList),
              (status = 401, description = "No or a wrong API key", body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<ModelList> {
    let data = state
        .models()
        .models()
        .iter()
        .filter(|m| caller.allows_model(m.id()))
        .map(|m| model_object(&state, m.id()))
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

/// One model, or 404.
#[utoipa::path(get, path = "/models/{id}", tag = "models", security(("api_key" = [])),
    params(("id" = String, Path, description = "The model's id")),
    responses((status = 200, description = "The model", body = ModelObject),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 404, description = "No such model", body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    if state.models().get(&id).is_some() && caller.allows_model(&id) {
        Ok(Json(model_object(&state, &id)))
    } else {
        Err(ApiError::unknown_model(&id))
    }
}

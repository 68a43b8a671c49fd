//! The models: `GET /v1/models` and `GET /v1/models/{id}` as OpenAI lists them (with what
//! is loaded, its memory and when it was last used), and the admin routes that load and
//! unload them while serving.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use helixflow_core::platform::Caller;
use helixflow_core::registry::{KeepAlive, ModelStatus, Unloaded};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::wire::parse_body;

/// A model, as OpenAI describes one, with HelixFlow's account of it.
#[derive(Serialize, ToSchema)]
pub(crate) struct ModelObject {
    /// The id requests name it by.
    id: String,
    /// Always `model`.
    object: &'static str,
    /// When it was loaded, or the server started (Unix seconds).
    created: u64,
    /// Always `helixflow`.
    owned_by: &'static str,
    /// `loaded`, `loading`, or `available` (a request for it loads it).
    state: &'static str,
    /// `chat` or `embedding`, once known.
    kind: Option<String>,
    /// The memory it takes loaded: weights and the most its KV cache may hold (bytes,
    /// estimated; 0 while not loaded).
    memory_bytes: u64,
    /// Requests using it now.
    in_flight: usize,
    /// When its last request ended (Unix seconds), while loaded.
    last_used: Option<u64>,
    /// When it will be unloaded if it stays idle (Unix seconds); null: not while in use or
    /// kept until unloaded.
    expires_at: Option<u64>,
}

/// The `GET /v1/models` answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct ModelList {
    /// Always `list`.
    object: &'static str,
    /// The models loaded and those a request would load.
    data: Vec<ModelObject>,
}

fn model_object(state: &AppState, status: &ModelStatus) -> ModelObject {
    ModelObject {
        id: status.id.clone(),
        object: "model",
        created: status.loaded_at.unwrap_or_else(|| state.started()),
        owned_by: "helixflow",
        state: status.state.as_str(),
        kind: status.kind.map(|k| k.to_string()),
        memory_bytes: status.footprint.total(),
        in_flight: status.in_flight,
        last_used: status.last_used,
        expires_at: status.expires_at,
    }
}

/// The models this server serves or would load (those the caller's key may use).
#[utoipa::path(get, path = "/models", tag = "models", security(("api_key" = [])),
    responses((status = 200, description = "The models", body = ModelList),
              (status = 401, description = "No or a wrong API key", body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<ModelList> {
    let data = state
        .models()
        .list()
        .iter()
        .filter(|m| caller.allows_model(&m.id))
        .map(|m| model_object(&state, m))
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
    let status = caller
        .allows_model(&id)
        .then(|| state.models().list().into_iter().find(|m| m.id == id))
        .flatten()
        .ok_or_else(|| ApiError::unknown_model(&id))?;
    Ok(Json(model_object(&state, &status)))
}

/// The `GET /v1/admin/models` answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct ModelsInMemory {
    /// Always `list`.
    object: &'static str,
    /// Every model, loaded or not.
    data: Vec<ModelObject>,
    /// Bytes the loaded (and loading) models take.
    reserved_bytes: u64,
    /// The memory budget (`--memory-budget-mib`); null: none.
    budget_bytes: Option<u64>,
}

/// `POST /v1/admin/models/load` and `/unload`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelAction {
    /// The model's id.
    model: String,
    /// For a load: how long it stays once idle (`5m`, `30s`, `0`, `-1` for until unloaded);
    /// default: the server's `--keep-alive`.
    keep_alive: Option<String>,
}

/// The `POST /v1/admin/models/unload` answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct UnloadedModel {
    /// The model's id.
    id: String,
    /// Whether it is gone now; if not, it goes when its requests in flight end.
    unloaded: bool,
    /// Its requests in flight.
    in_flight: usize,
}

/// Every model with its memory and use, and the memory budget.
#[utoipa::path(get, path = "/admin/models", tag = "admin", security(("api_key" = [])),
    responses((status = 200, description = "The models and the memory they take", body = ModelsInMemory),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 403, description = "The key lacks the admin scope", body = ErrorBody)))]
pub(crate) async fn loaded(State(state): State<AppState>) -> Json<ModelsInMemory> {
    let memory = state.models().memory();
    let data = state
        .models()
        .list()
        .iter()
        .map(|m| model_object(&state, m))
        .collect();
    Json(ModelsInMemory {
        object: "list",
        data,
        reserved_bytes: memory.reserved_bytes,
        budget_bytes: memory.budget_bytes,
    })
}

/// Loads a model (if it is not loaded) and starts its keep-alive.
#[utoipa::path(post, path = "/admin/models/load", tag = "admin", security(("api_key" = [])),
    request_body = ModelAction,
    responses((status = 200, description = "The model, loaded", body = ModelObject),
              (status = 400, description = "A bad keep_alive", body = ErrorBody),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 403, description = "The key lacks the admin scope", body = ErrorBody),
              (status = 404, description = "No such model", body = ErrorBody),
              (status = 503, description = "It cannot fit beside the busy models now; retry after `Retry-After` seconds", body = ErrorBody)))]
pub(crate) async fn load(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ModelObject>, ApiError> {
    let action: ModelAction = parse_body(body)?;
    let keep_alive = action
        .keep_alive
        .as_deref()
        .map(KeepAlive::parse)
        .transpose()?;
    let models = state.models().clone();
    let id = action.model.clone();
    let status = tokio::task::spawn_blocking(move || models.load(&id, keep_alive))
        .await
        .map_err(|e| ApiError::internal(format!("loading the model failed: {e}")))?
        .map_err(|e| ApiError {
            param: Some("model".into()),
            ..e.into()
        })?;
    Ok(Json(model_object(&state, &status)))
}

/// Unloads a model now, or when its requests in flight end.
#[utoipa::path(post, path = "/admin/models/unload", tag = "admin", security(("api_key" = [])),
    request_body = ModelAction,
    responses((status = 200, description = "What became of it", body = UnloadedModel),
              (status = 400, description = "It is still loading, or keep_alive was given", body = ErrorBody),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 403, description = "The key lacks the admin scope", body = ErrorBody),
              (status = 404, description = "No such model loaded", body = ErrorBody)))]
pub(crate) async fn unload(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UnloadedModel>, ApiError> {
    let action: ModelAction = parse_body(body)?;
    if action.keep_alive.is_some() {
        return Err(ApiError::invalid_param(
            "keep_alive",
            "keep_alive applies to loading, not unloading",
        ));
    }
    let in_flight = match state.models().unload(&action.model)? {
        Unloaded::Now => 0,
        Unloaded::WhenIdle { in_flight } => in_flight,
    };
    Ok(Json(UnloadedModel {
        id: action.model,
        unloaded: in_flight == 0,
        in_flight,
    }))
}

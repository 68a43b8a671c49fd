//! Admin routes (the `admin` scope): create, list and revoke the platform's API keys (new keys
//! take the default limits unless `unlimited`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use helixflow_core::platform::{ApiKey, BudgetPeriod, KeyLimits, NewKey, Scope, Store};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::wire::parse_body;

/// `POST /v1/admin/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKeyRequest {
    /// A name for the key (1 to 200 characters).
    name: String,
    /// Who the key belongs to.
    owner: Option<String>,
    /// Its scopes (default: `["inference"]`).
    scopes: Option<Vec<Scope>>,
    /// The models it may use (default: all).
    models: Option<Vec<String>>,
    /// Requests per minute.
    rpm: Option<u64>,
    /// Tokens per minute.
    tpm: Option<u64>,
    /// Tokens per `budget_period`.
    budget_tokens: Option<u64>,
    /// `day` or `month`.
    budget_period: Option<BudgetPeriod>,
    /// When it stops working (Unix seconds).
    expires_at: Option<i64>,
    /// No limits at all: the default limits for new keys do not apply (no limit may be given
    /// then). Without it, each limit left unset takes its default.
    #[serde(default)]
    unlimited: bool,
}

/// A new key: the stored key and, this once, its secret.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedKeyBody {
    #[serde(flatten)]
    key: ApiKey,
    /// The whole key: shown only in this answer.
    secret: String,
}

/// The `GET /v1/admin/keys` answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyList {
    /// Always `list`.
    object: &'static str,
    /// Every key, without secrets.
    data: Vec<ApiKey>,
}

/// The `DELETE /v1/admin/keys/{id}` answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct RevokedKey {
    /// The key's id.
    id: String,
    /// Always true.
    revoked: bool,
}

/// The platform's store, or a 400 saying the server has none.
pub(crate) fn store(state: &AppState) -> Result<&Store, ApiError> {
    state.auth().store().ok_or_else(|| {
        ApiError::invalid(
            "This server has no platform database (it was started with --no-database): \
             keys, users and usage need one.",
        )
    })
}

/// Makes a key and returns it with its secret, once.
#[utoipa::path(post, path = "/admin/keys", tag = "admin", security(("api_key" = [])),
    request_body = CreateKeyRequest,
    responses((status = 201, description = "The new key, with its secret", body = CreatedKeyBody),
              (status = 400, description = "Invalid fields, or no platform database", body = ErrorBody),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 403, description = "The key lacks the admin scope", body = ErrorBody)))]
pub(crate) async fn create_key(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedKeyBody>), ApiError> {
    let request: CreateKeyRequest = parse_body(body)?;
    let limited = [request.rpm, request.tpm, request.budget_tokens]
        .iter()
        .any(Option::is_some)
        || request.budget_period.is_some();
    if request.unlimited && limited {
        return Err(ApiError::invalid_param(
            "unlimited",
            "an unlimited key takes no rpm, tpm or budget",
        ));
    }
    let unlimited = request.unlimited;
    let new = NewKey {
        name: request.name,
        owner: request.owner,
        scopes: request.scopes.unwrap_or_else(|| vec![Scope::Inference]),
        models: request.models,
        limits: KeyLimits {
            rpm: request.rpm,
            tpm: request.tpm,
            budget_tokens: request.budget_tokens,
            budget_period: request.budget_period,
        },
        expires_at: request.expires_at,
    };
    let store = store(&state)?;
    let created = if unlimited {
        store.create_key_exact(new).await
    } else {
        store.create_key(new).await
    }
    .map_err(ApiError::from)?;
    let body = CreatedKeyBody {
        key: created.key,
        secret: created.secret,
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// Every key, without secrets.
#[utoipa::path(get, path = "/admin/keys", tag = "admin", security(("api_key" = [])),
    responses((status = 200, description = "The keys", body = KeyList),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 403, description = "The key lacks the admin scope", body = ErrorBody)))]
pub(crate) async fn list_keys(State(state): State<AppState>) -> Result<Json<KeyList>, ApiError> {
    let data = store(&state)?.list_keys().await.map_err(ApiError::from)?;
    Ok(Json(KeyList {
        object: "list",
        data,
    }))
}

/// Revokes a key: this server refuses it at once, the others within a second.
#[utoipa::path(delete, path = "/admin/keys/{id}", tag = "admin", security(("api_key" = [])),
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 200, description = "Revoked", body = RevokedKey),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 403, description = "The key lacks the admin scope", body = ErrorBody),
              (status = 404, description = "No such key", body = ErrorBody)))]
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RevokedKey>, ApiError> {
    if !store(&state)?
        .revoke_key(&id)
        .await
        .map_err(ApiError::from)?
    {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            ..ApiError::invalid(format!("No key has the id `{id}`."))
        });
    }
    state.auth().forget(&id);
    Ok(Json(RevokedKey { id, revoked: true }))
}

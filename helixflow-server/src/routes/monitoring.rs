//! Admin routes (the `admin` scope) that look at the server: its statistics now, and what a
//! credential is. The gRPC `Monitoring` and `Auth` services answer from the same values.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::status::{check, snapshot, CredentialInfo, StatsSnapshot};
use crate::wire::parse_body;

/// The server's and its engines' statistics now.
#[utoipa::path(get, path = "/admin/stats", tag = "admin", security(("api_key" = [])),
    responses((status = 200, description = "The statistics", body = StatsSnapshot),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 403, description = "The key lacks the admin scope", body = ErrorBody)))]
pub(crate) async fn stats(State(state): State<AppState>) -> Json<StatsSnapshot> {
    Json(snapshot(&state))
}

/// `POST /v1/admin/validate`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValidateRequest {
    /// An API key or an access token.
    credential: String,
}

/// Says whether an API key or access token is accepted now, and what it may do.
#[utoipa::path(post, path = "/admin/validate", tag = "admin", security(("api_key" = [])),
    request_body = ValidateRequest,
    responses((status = 200, description = "What the credential is", body = CredentialInfo),
              (status = 400, description = "Malformed request", body = ErrorBody),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 403, description = "The key lacks the admin scope", body = ErrorBody)))]
pub(crate) async fn validate(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CredentialInfo>, ApiError> {
    let request: ValidateRequest = parse_body(body)?;
    Ok(Json(check(&state, &request.credential).await?))
}

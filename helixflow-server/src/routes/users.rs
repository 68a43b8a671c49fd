//! Admin routes (the `admin` scope) for users and their access tokens: create, list and
//! disable users; revoke a token by its id or whole.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use helixflow_core::platform::{NewUser, Scope, User};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::routes::admin::store;
use crate::state::AppState;
use crate::wire::parse_body;

/// `POST /v1/admin/users`. Not `Debug`: it holds a password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateUserRequest {
    /// 1 to 64 characters of `A-Z a-z 0-9 _ . @ -`.
    username: String,
    /// 8 to 1024 characters.
    password: String,
    /// Its scopes (default: `["inference"]`).
    scopes: Option<Vec<Scope>>,
}

/// The `GET /v1/admin/users` answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct UserList {
    /// Always `list`.
    object: &'static str,
    /// Every user, without password hashes.
    data: Vec<User>,
}

/// The `POST /v1/admin/users/{id}/disable` answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct DisabledUser {
    /// The user's id.
    id: String,
    /// Always true.
    disabled: bool,
}

/// `POST /v1/admin/tokens/revoke`: the token's id, or the token itself.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeTokenRequest {
    /// The token's id (its `jti` claim).
    jti: Option<String>,
    /// The whole access token.
    token: Option<String>,
}

/// The `POST /v1/admin/tokens/revoke` answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct RevokedToken {
    /// The revoked token's id.
    jti: String,
    /// Always true.
    revoked: bool,
}

/// Makes a user who can then log in.
#[utoipa::path(post, path = "/admin/users", tag = "admin", security(("api_key" = [])),
    request_body = CreateUserRequest,
    responses((status = 201, description = "The new user", body = User),
              (status = 400, description = "Invalid fields, or no platform database", body = ErrorBody),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 403, description = "The caller lacks the admin scope", body = ErrorBody),
              (status = 409, description = "The username is taken", body = ErrorBody)))]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let store = store(&state)?;
    let request: CreateUserRequest = parse_body(body)?;
    let new = NewUser {
        username: request.username,
        password: request.password,
        scopes: request.scopes.unwrap_or_else(|| vec![Scope::Inference]),
    };
    let user = store.create_user(new).await.map_err(ApiError::from)?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Every user, without password hashes.
#[utoipa::path(get, path = "/admin/users", tag = "admin", security(("api_key" = [])),
    responses((status = 200, description = "The users", body = UserList),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 403, description = "The caller lacks the admin scope", body = ErrorBody)))]
pub(crate) async fn list_users(State(state): State<AppState>) -> Result<Json<UserList>, ApiError> {
    let data = store(&state)?.list_users().await.map_err(ApiError::from)?;
    Ok(Json(UserList {
        object: "list",
        data,
    }))
}

/// Disables a user: logins fail, and their tokens are refused by this server at once and by
/// the others within a second.
#[utoipa::path(post, path = "/admin/users/{id}/disable", tag = "admin", security(("api_key" = [])),
    params(("id" = String, Path, description = "The user's id")),
    responses((status = 200, description = "Disabled", body = DisabledUser),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 403, description = "The caller lacks the admin scope", body = ErrorBody),
              (status = 404, description = "No such user", body = ErrorBody)))]
pub(crate) async fn disable_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DisabledUser>, ApiError> {
    if !store(&state)?
        .disable_user(&id)
        .await
        .map_err(ApiError::from)?
    {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            ..ApiError::invalid(format!("No user has the id `{id:.80}`."))
        });
    }
    state.auth().forget_user(&id);
    Ok(Json(DisabledUser { id, disabled: true }))
}

/// Revokes an access token, named by its id or given whole: this server refuses it at once,
/// the others within a second.
#[utoipa::path(post, path = "/admin/tokens/revoke", tag = "admin", security(("api_key" = [])),
    request_body = RevokeTokenRequest,
    responses((status = 200, description = "Revoked", body = RevokedToken),
              (status = 400, description = "Neither or both of jti and token, or a token this server did not issue", body = ErrorBody),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 403, description = "The caller lacks the admin scope", body = ErrorBody)))]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RevokedToken>, ApiError> {
    let store = store(&state)?;
    let request: RevokeTokenRequest = parse_body(body)?;
    let (jti, user_id, expires_at) = match (request.jti, request.token) {
        (Some(jti), None) => (jti, None, None),
        (None, Some(token)) => {
            let id = store
                .token_id(&token)
                .await
                .map_err(ApiError::from)?
                .ok_or_else(|| {
                    ApiError::invalid_param("token", "This is not an access token of this server.")
                })?;
            (id.jti, Some(id.user_id), Some(id.expires_at))
        }
        _ => return Err(ApiError::invalid("Give exactly one of `jti` and `token`.")),
    };
    store
        .revoke_token(&jti, user_id.as_deref(), expires_at)
        .await
        .map_err(|e| ApiError {
            param: Some("jti".into()),
            ..ApiError::from(e)
        })?;
    state.auth().forget_token(&jti);
    Ok(Json(RevokedToken { jti, revoked: true }))
}

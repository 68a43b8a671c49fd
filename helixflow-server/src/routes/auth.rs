//! Logins: `POST /v1/auth/login` trades a username and password for a short-lived access
//! token (a JWT, used as a bearer token); `POST /v1/auth/logout` revokes the token presented.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use helixflow_core::platform::{Caller, LoginOutcome};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::bearer;
use crate::error::{ApiError, ErrorBody};
use crate::routes::admin::store;
use crate::state::AppState;
use crate::wire::parse_body;

/// `POST /v1/auth/login`. Not `Debug`: it holds a password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    /// The username.
    username: String,
    /// The password.
    password: String,
}

/// An access token: present it as `Authorization: Bearer <access_token>`.
#[derive(Serialize, ToSchema)]
pub(crate) struct TokenBody {
    /// The token (a JWT).
    access_token: String,
    /// Always `bearer`.
    token_type: &'static str,
    /// Seconds until it expires.
    expires_in: u64,
    /// When it expires (Unix seconds).
    expires_at: i64,
}

/// The `POST /v1/auth/logout` answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct LoggedOut {
    /// The revoked token's id.
    jti: String,
    /// Always true.
    revoked: bool,
}

/// 401 for a failed login: an unknown user, a wrong password and a disabled user all read
/// the same, so that logins cannot probe which usernames exist.
fn bad_credentials() -> ApiError {
    ApiError {
        code: Some("invalid_credentials"),
        message: "Invalid username or password.".into(),
        ..ApiError::unauthorized()
    }
}

/// 429 with `Retry-After`.
fn rate_limited(retry_after: u64) -> Response {
    let error = ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        kind: "requests",
        code: Some("rate_limit_exceeded"),
        ..ApiError::invalid(format!(
            "Too many failed logins for this username: try again in {retry_after} s."
        ))
    };
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

/// Logs in and returns an access token.
#[utoipa::path(post, path = "/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses((status = 200, description = "An access token", body = TokenBody),
              (status = 400, description = "A malformed body, or no platform database", body = ErrorBody),
              (status = 401, description = "Unknown user, wrong password or disabled user", body = ErrorBody),
              (status = 429, description = "Too many failed logins for this username; see Retry-After", body = ErrorBody)))]
pub(crate) async fn login(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TokenBody>, Response> {
    let store = store(&state).map_err(IntoResponse::into_response)?;
    let request: LoginRequest = parse_body(body).map_err(IntoResponse::into_response)?;
    let policy = state.auth().login_policy();
    let outcome = store
        .login_with(&request.username, &request.password, policy)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    match outcome {
        LoginOutcome::Issued(token) => Ok(Json(TokenBody {
            access_token: token.token,
            token_type: "bearer",
            expires_in: token.expires_in,
            expires_at: token.expires_at,
        })),
        LoginOutcome::RateLimited { retry_after } => Err(rate_limited(retry_after.as_secs())),
        // Disabled reads as a bad password: the username's existence stays private.
        _ => Err(bad_credentials().into_response()),
    }
}

/// Revokes the access token presented: refused from then on, by every replica within a
/// second.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("api_key" = [])),
    responses((status = 200, description = "The token is revoked", body = LoggedOut),
              (status = 400, description = "The bearer token is an API key, not an access token", body = ErrorBody),
              (status = 401, description = "No, or an invalid, access token", body = ErrorBody)))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<LoggedOut>, ApiError> {
    let store = store(&state)?;
    let token = bearer(headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()));
    let caller = state
        .auth()
        .authenticate(token)
        .await
        .map_err(|e| ApiError::internal(format!("checking the access token failed: {e}")))?
        .ok_or_else(ApiError::unauthorized)?;
    let Caller::User(session) = caller else {
        return Err(ApiError::invalid(
            "Logout ends an access token from /v1/auth/login; API keys are revoked with \
             DELETE /v1/admin/keys/{id}.",
        ));
    };
    store
        .revoke_token(
            &session.jti,
            Some(&session.user_id),
            Some(session.expires_at),
        )
        .await
        .map_err(ApiError::from)?;
    state.auth().forget_token(&session.jti);
    Ok(Json(LoggedOut {
        jti: session.jti,
        revoked: true,
    }))
}

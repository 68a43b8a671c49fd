//! Authentication of `/v1` routes: the operator key or a key from the store, and the scope
//! and model checks the handlers apply.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use helixflow_core::platform::{Caller, Scope};

use crate::error::ApiError;
use crate::state::AppState;

/// The bearer token of an `Authorization` header value (the scheme's case does not matter,
/// RFC 9110 §11.1).
pub(crate) fn bearer(value: Option<&str>) -> Option<&str> {
    let (scheme, token) = value?.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The key a request presents: a bearer token, or (as Anthropic's clients send it) the
/// `x-api-key` header.
pub(crate) fn api_key(headers: &HeaderMap) -> Option<&str> {
    bearer(headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

/// The caller presenting `token` if it may run inference: 401 for no or a bad key, 403 for a
/// key without the `inference` scope.
pub(crate) async fn inference_caller(
    state: &AppState,
    token: Option<&str>,
) -> Result<Caller, ApiError> {
    scoped_caller(state, token, Scope::Inference).await
}

/// The caller presenting `token` if it has `scope`: 401 for no or a bad key, 403 without it.
pub(crate) async fn scoped_caller(
    state: &AppState,
    token: Option<&str>,
    scope: Scope,
) -> Result<Caller, ApiError> {
    let caller = state
        .auth()
        .authenticate(token)
        .await
        .map_err(|e| ApiError::internal(format!("checking the API key failed: {e}")))?
        .ok_or_else(ApiError::unauthorized)?;
    if !caller.has_scope(scope) {
        return Err(ApiError::forbidden(format!(
            "This API key does not have the `{}` scope.",
            scope.as_str()
        )));
    }
    Ok(caller)
}

/// Lets an inference request through with its [`Caller`] in the extensions, or answers
/// 401/403.
pub(crate) async fn require_api_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    require(&state, &headers, request, next, Scope::Inference).await
}

/// Lets an admin request through, or answers 401/403.
pub(crate) async fn require_admin_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    require(&state, &headers, request, next, Scope::Admin).await
}

async fn require(
    state: &AppState,
    headers: &HeaderMap,
    mut request: Request,
    next: Next,
    scope: Scope,
) -> Result<Response, ApiError> {
    let token = api_key(headers);
    let caller = match scoped_caller(state, token, scope).await {
        Ok(caller) => caller,
        Err(e) => {
            crate::routes::health::discard_body(request, state.body_limit()).await;
            return Err(e);
        }
    };
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// 403 unless `caller` may use `model`.
pub(crate) fn check_model(caller: &Caller, model: &str) -> Result<(), ApiError> {
    if caller.allows_model(model) {
        Ok(())
    } else {
        Err(ApiError {
            param: Some("model".into()),
            ..ApiError::forbidden(format!("This API key may not use the model `{model}`."))
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer k", "bearer k", "BEARER  k ", " Bearer k"] {
            assert_eq!(super::bearer(Some(header)), Some("k"), "{header}");
        }
        assert_eq!(super::bearer(Some("Basic k")), None);
        assert_eq!(super::bearer(Some("Bearer")), None);
        assert_eq!(super::bearer(None), None);
    }
}

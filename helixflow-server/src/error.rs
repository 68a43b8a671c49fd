//! One error type for every handler, rendered as OpenAI's error JSON.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use helixflow_core::platform::PlatformError;
use helixflow_core::{Error as CoreError, ErrorClass};
use serde::Serialize;
use utoipa::ToSchema;

/// OpenAI's error body.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong.
    error: ErrorDetail,
}

/// The `error` object of [`ErrorBody`].
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Human-readable explanation.
    message: String,
    /// `invalid_request_error` or `server_error`; for a 429, the limit: `requests`, `tokens`
    /// or `insufficient_quota`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The request field at fault, when known.
    param: Option<String>,
    /// A machine-readable code (`model_not_found`, `invalid_api_key`), when there is one.
    code: Option<&'static str>,
}

/// An API error: an HTTP status and OpenAI's `{"error": {...}}` body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Human-readable explanation.
    pub message: String,
    /// OpenAI's error `type`.
    pub kind: &'static str,
    /// OpenAI's error `code`, when there is one.
    pub code: Option<&'static str>,
    /// The request field at fault, when known.
    pub param: Option<String>,
    /// Headers the answer carries besides the body (`Retry-After`, `x-ratelimit-*`), if any
    /// (boxed: most errors have none, and results carrying an error stay small).
    pub headers: Option<Box<HeaderMap>>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            code: None,
            param: None,
            headers: None,
        }
    }

    /// 400: the request is malformed or a parameter is out of range.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 naming the field at fault.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.to_string()),
            ..Self::invalid(message)
        }
    }

    /// 404 for a model this server does not serve.
    pub fn unknown_model(model: &str) -> Self {
        Self {
            code: Some("model_not_found"),
            param: Some("model".into()),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("The model `{model}` does not exist or is not served here."),
            )
        }
    }

    /// 404 for an unknown route.
    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("No route {path}"),
        )
    }

    /// 401: no or a wrong API key.
    pub fn unauthorized() -> Self {
        Self {
            code: Some("invalid_api_key"),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "Missing or invalid API key: send `Authorization: Bearer <key>` (or `x-api-key: <key>`).",
            )
        }
    }

    /// 403: a valid key without the scope or model the request needs.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            code: Some("permission_denied"),
            ..Self::new(StatusCode::FORBIDDEN, "invalid_request_error", message)
        }
    }

    /// 503: the engine's queue is full; retry shortly.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
    }

    /// This error with a `Retry-After` of `seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.headers
            .get_or_insert_with(Default::default)
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        self
    }

    /// 503: the server is shutting down; a stream still running at the end of the grace
    /// period ends with this.
    pub fn shutting_down() -> Self {
        Self {
            code: Some("server_shutting_down"),
            ..Self::overloaded("The server is shutting down; the generation was stopped.")
        }
    }

    /// 504: the generation ran past the request timeout (and was cancelled).
    pub fn timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            "The request took longer than the server's request timeout and was cancelled.",
        )
    }

    /// 500: a failure of the server itself.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind,
                param: self.param.clone(),
                code: self.code,
            },
        })
        .expect("errors serialise")
    }
}

impl ApiError {
    /// An error of `class` with `message`: the one place a core classification becomes an
    /// HTTP status (and, through [`tonic::Status::from`], a gRPC code).
    pub fn of_class(class: ErrorClass, message: impl Into<String>) -> Self {
        let (status, kind) = match class {
            ErrorClass::InvalidRequest | ErrorClass::ContextLength => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            ErrorClass::ModelNotFound | ErrorClass::WrongModelKind => {
                (StatusCode::NOT_FOUND, "invalid_request_error")
            }
            ErrorClass::Conflict => (StatusCode::CONFLICT, "invalid_request_error"),
            ErrorClass::Overloaded | ErrorClass::EngineStopped => {
                (StatusCode::SERVICE_UNAVAILABLE, "server_error")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        };
        Self::new(status, kind, message)
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let error = match &e {
            CoreError::ModelNotFound(m) => Self::unknown_model(m),
            // OpenAI answers a model of the wrong kind with a 404 too, saying why.
            CoreError::WrongModelKind { model, wanted } => Self {
                message: format!(
                    "The model `{model}` is not a {wanted} model and cannot serve this endpoint."
                ),
                ..Self::unknown_model(model)
            },
            _ => Self {
                param: e.field().map(String::from),
                ..Self::of_class(e.class(), e.to_string())
            },
        };
        match e.retry_after_secs() {
            Some(seconds) => error.retry_after(seconds),
            None => error,
        }
    }
}

impl From<PlatformError> for ApiError {
    fn from(e: PlatformError) -> Self {
        Self::of_class(e.class(), e.to_string())
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        use tonic::Code;
        let code = match e.status {
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Code::InvalidArgument,
            StatusCode::PAYLOAD_TOO_LARGE => Code::ResourceExhausted,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::CONFLICT => Code::AlreadyExists,
            StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
            _ => Code::Internal,
        };
        let mut status = tonic::Status::new(code, e.message);
        // Retry-After and the x-ratelimit-* figures go along as metadata, as HTTP sends them.
        for (name, value) in e.headers.iter().flat_map(|h| h.iter()) {
            let name = tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes());
            let value = tonic::metadata::MetadataValue::try_from(value.as_bytes());
            if let (Ok(name), Ok(value)) = (name, value) {
                status.metadata_mut().insert(name, value);
            }
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.status == StatusCode::SERVICE_UNAVAILABLE;
        // The rest of an oversized body is never read, so the connection cannot carry another
        // request: saying so keeps a client from reusing it and seeing a reset.
        let close = self.status == StatusCode::PAYLOAD_TOO_LARGE;
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(headers) = self.headers {
            response.headers_mut().extend(*headers);
        }
        if retry && !response.headers().contains_key(header::RETRY_AFTER) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// The largest error body [`reshape`] rewrites (ours are far smaller).
const RESHAPED_BODY_LIMIT: usize = 64 << 10;

/// `response` as another API's error, where it is one: its OpenAI body's message given to
/// `shape` (with the status) for the body that API sends; the status and headers stay. For
/// the routes of other APIs (Anthropic's, Ollama's), so that every error on them, the
/// authentication's and the limits' included, has their shape.
pub(crate) async fn reshape(
    response: Response,
    shape: impl Fn(u16, &str) -> serde_json::Value,
) -> Response {
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, RESHAPED_BODY_LIMIT)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = shape(status.as_u16(), &message).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_errors_map_to_client_or_server_statuses() {
        let bad = ApiError::from(CoreError::InvalidRequest(
            "n must be between 1 and 16".into(),
        ));
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        let busy = ApiError::from(CoreError::Overloaded {
            queued: 4,
            retry_after_secs: 7,
        });
        let response = busy.clone().into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
        let too_large = ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..ApiError::invalid("too large")
        };
        assert_eq!(
            too_large.into_response().headers()[header::CONNECTION],
            "close"
        );
        let overflow = ApiError::from(CoreError::ContextOverflow {
            prompt_tokens: 10,
            max_tokens: 9000,
            context: 8192,
        });
        assert_eq!(overflow.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            ApiError::unknown_model("x").body()["error"]["code"],
            "model_not_found"
        );
        let status = tonic::Status::from(ApiError::unknown_model("x"));
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(status.message().contains("`x`"));
        assert_eq!(tonic::Status::from(busy).code(), tonic::Code::Unavailable);
        assert_eq!(
            tonic::Status::from(bad).code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            tonic::Status::from(ApiError::unauthorized()).code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn one_classification_gives_the_same_answer_over_http_and_grpc() {
        // A clash with what is stored: 409 over HTTP, ALREADY_EXISTS over gRPC (it was
        // INTERNAL there when each front end classified on its own).
        let taken = ApiError::from(PlatformError::Conflict("the username is taken".into()));
        assert_eq!(taken.status, StatusCode::CONFLICT);
        assert_eq!(
            tonic::Status::from(taken).code(),
            tonic::Code::AlreadyExists
        );
        let invalid = ApiError::from(PlatformError::Invalid("bad scope".into()));
        assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
        // A field-aware core error names its field (OpenAI's `param`), with its own message.
        let echo = ApiError::from(CoreError::invalid_field("echo", "echo is not supported"));
        assert_eq!(echo.status, StatusCode::BAD_REQUEST);
        assert_eq!(echo.body()["error"]["param"], "echo");
        assert_eq!(echo.body()["error"]["message"], "echo is not supported");
        let stopped = ApiError::from(CoreError::EngineStopped);
        assert_eq!(stopped.status, StatusCode::SERVICE_UNAVAILABLE);
        let wrong = ApiError::from(CoreError::WrongModelKind {
            model: "m".into(),
            wanted: helixflow_core::source::ModelKind::Chat,
        });
        assert_eq!(wrong.status, StatusCode::NOT_FOUND);
    }
}

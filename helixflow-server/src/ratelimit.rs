//! Rate limits on the wire: a refusal is a 429 in OpenAI's error shape with `Retry-After`, and
//! every answer to a limited key carries the `x-ratelimit-*` headers OpenAI sends.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use helixflow_core::platform::{Limit, LimitStatus, QuotaError};

use crate::error::ApiError;

/// `x-ratelimit-limit-*`, `x-ratelimit-remaining-*` and `x-ratelimit-reset-*` for each limit
/// the key has (`requests`, `tokens`, and HelixFlow's `budget`).
pub(crate) fn headers(limits: &[LimitStatus]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for status in limits {
        let name = status.limit.as_str();
        let mut put = |what: &str, value: String| {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(format!("x-ratelimit-{what}-{name}")),
                HeaderValue::try_from(value),
            ) {
                headers.insert(name, value);
            }
        };
        put("limit", status.max.to_string());
        put("remaining", status.remaining.to_string());
        put("reset", duration(status.reset_after));
    }
    headers
}

/// A duration as OpenAI writes it in `x-ratelimit-reset-*`: `1s`, `6m0s`, `2h0m5s`.
pub(crate) fn duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3_600, seconds / 60 % 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// A failed admission as an API error: 429 for a refusal (type `requests`, `tokens` or
/// `insufficient_quota` for a spent budget), 500 when the database failed.
pub(crate) fn refused(error: QuotaError) -> ApiError {
    let refusal = match error {
        QuotaError::Refused(refusal) => refusal,
        other => return ApiError::internal(format!("checking the rate limits failed: {other}")),
    };
    let (kind, code) = match refusal.limit {
        Limit::Requests => ("requests", "rate_limit_exceeded"),
        Limit::Tokens => ("tokens", "rate_limit_exceeded"),
        Limit::Budget => ("insufficient_quota", "insufficient_quota"),
    };
    let mut headers = headers(&refusal.status);
    headers.insert(header::RETRY_AFTER, HeaderValue::from(refusal.retry_after));
    let too_large = refusal.never_fits() && refusal.limit != Limit::Requests;
    ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        message: refusal.to_string(),
        kind,
        code: Some(code),
        param: too_large.then(|| "max_tokens".to_string()),
        headers: Some(Box::new(headers)),
    }
}

/// `response` with the key's rate-limit headers and the request's `x-request-id`.
pub(crate) fn with_headers(
    mut response: Response,
    limits: &[LimitStatus],
    request_id: &str,
) -> Response {
    let map = response.headers_mut();
    map.extend(headers(limits));
    if let Ok(id) = HeaderValue::try_from(request_id) {
        map.insert(HeaderName::from_static("x-request-id"), id);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_openai() {
        assert_eq!(duration(1), "1s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(360), "6m0s");
        assert_eq!(duration(7_205), "2h0m5s");
        let headers = headers(&[LimitStatus {
            limit: Limit::Tokens,
            max: 1_000,
            remaining: 250,
            reset_after: 61,
        }]);
        assert_eq!(headers["x-ratelimit-limit-tokens"], "1000");
        assert_eq!(headers["x-ratelimit-remaining-tokens"], "250");
        assert_eq!(headers["x-ratelimit-reset-tokens"], "1m1s");
        assert!(headers.get("x-ratelimit-limit-requests").is_none());
    }
}

//! Usage and limits: `GET /v1/usage` (the caller's own usage), and for the admin scope
//! `GET /v1/admin/usage` (reports by key, model and day) and `GET`/`PUT
//! /v1/admin/key-defaults` (the limits new keys get).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::{Extension, Json};
use helixflow_core::completion::unix_now;
use helixflow_core::platform::{
    BudgetPeriod, Caller, KeyLimits, UsageFilter, UsageGroup, UsageTotals,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::admin::store;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::wire::parse_body;

/// How far back a report goes when `start_time` is not given (30 days).
const DEFAULT_WINDOW: i64 = 30 * 86_400;
const DAY: i64 = 86_400;

/// `GET /v1/usage` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsageQuery {
    /// From this time (Unix seconds, inclusive); default: 30 days ago.
    start_time: Option<i64>,
    /// Until this time (Unix seconds, exclusive); default: now.
    end_time: Option<i64>,
}

/// `GET /v1/admin/usage` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReportQuery {
    /// What to group by: `key`, `model` and/or `day`, comma-separated; default: `key`.
    group_by: Option<String>,
    /// Only this key's requests.
    key_id: Option<String>,
    /// From this time (Unix seconds, inclusive); default: 30 days ago.
    start_time: Option<i64>,
    /// Until this time (Unix seconds, exclusive); default: now.
    end_time: Option<i64>,
}

/// The totals of one group of requests.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageResult {
    /// Always `usage.result`.
    object: &'static str,
    /// The key, when grouped by key (`null` there: requests without a key).
    api_key_id: Option<String>,
    /// The model, when grouped by model.
    model: Option<String>,
    /// The UTC day's start (Unix seconds), when grouped by day.
    start_time: Option<i64>,
    /// Prompt tokens.
    input_tokens: u64,
    /// Generated tokens.
    output_tokens: u64,
    /// Requests.
    num_model_requests: u64,
    /// Requests cut off before they ended (the client left, or the timeout).
    cancelled_requests: u64,
    /// Requests that ended with an error.
    failed_requests: u64,
}

impl From<UsageTotals> for UsageResult {
    fn from(t: UsageTotals) -> Self {
        Self {
            object: "usage.result",
            api_key_id: t.key_id,
            model: t.model,
            start_time: t.day,
            input_tokens: t.prompt_tokens,
            output_tokens: t.completion_tokens,
            num_model_requests: t.requests,
            cancelled_requests: t.cancelled,
            failed_requests: t.failed,
        }
    }
}

/// One day of the caller's usage, by model.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageBucket {
    /// Always `bucket`.
    object: &'static str,
    /// The day's start (Unix seconds, UTC).
    start_time: i64,
    /// The next day's start.
    end_time: i64,
    /// One result per model.
    results: Vec<UsageResult>,
}

/// The `GET /v1/usage` answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsagePage {
    /// Always `page`.
    object: &'static str,
    /// One bucket per day with usage, oldest first.
    data: Vec<UsageBucket>,
    /// Always false: every bucket is in the page.
    has_more: bool,
}

/// The `GET /v1/admin/usage` answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageReport {
    /// Always `list`.
    object: &'static str,
    /// What the results are grouped by.
    group_by: Vec<UsageGroup>,
    /// One result per group.
    data: Vec<UsageResult>,
}

/// The `PUT /v1/admin/key-defaults` body: every limit, unset (or `null`) for none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyDefaultsRequest {
    /// Requests per minute.
    rpm: Option<u64>,
    /// Tokens per minute.
    tpm: Option<u64>,
    /// Tokens per `budget_period`.
    budget_tokens: Option<u64>,
    /// `day` or `month`.
    budget_period: Option<BudgetPeriod>,
}

/// A query string's parameters, or a 400 in OpenAI's shape.
fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::invalid(format!("Invalid query parameters: {}", e.body_text())))
}

/// `[start_time, end_time)`, checked, with the defaults.
fn time_range(start: Option<i64>, end: Option<i64>) -> Result<(i64, Option<i64>), ApiError> {
    let start = start.unwrap_or_else(|| unix_now() as i64 - DEFAULT_WINDOW);
    for (param, time) in [("start_time", Some(start)), ("end_time", end)] {
        if time.is_some_and(|t| t < 0) {
            return Err(ApiError::invalid_param(
                param,
                format!("{param} is in Unix seconds and cannot be negative"),
            ));
        }
    }
    if end.is_some_and(|end| end <= start) {
        return Err(ApiError::invalid_param(
            "end_time",
            "end_time must be after start_time",
        ));
    }
    Ok((start, end))
}

/// The caller's own usage, by day and model: its key's, or its user's.
#[utoipa::path(get, path = "/usage", tag = "usage", security(("api_key" = [])),
    params(UsageQuery),
    responses((status = 200, description = "The caller's usage by day and model", body = UsagePage),
              (status = 400, description = "Invalid parameters, or no platform database", body = ErrorBody),
              (status = 401, description = "No or a wrong API key", body = ErrorBody)))]
pub(crate) async fn own_usage(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<UsagePage>, ApiError> {
    let params = query(params)?;
    let (since, until) = time_range(params.start_time, params.end_time)?;
    let filter = UsageFilter {
        // A user sees the usage of all their keys; a key its own; the operator everyone's.
        user_id: caller.user_id().map(str::to_string),
        key_id: match caller.user_id() {
            Some(_) => None,
            None => caller.key().map(|k| k.id.clone()),
        },
        since: Some(since),
        until,
    };
    let totals = store(&state)?
        .usage_report(&filter, &[UsageGroup::Day, UsageGroup::Model])
        .await
        .map_err(ApiError::from)?;
    let mut data: Vec<UsageBucket> = Vec::new();
    for total in totals {
        let day = total.day.unwrap_or_default();
        if data.last().is_none_or(|b| b.start_time != day) {
            data.push(UsageBucket {
                object: "bucket",
                start_time: day,
                end_time: day + DAY,
                results: Vec::new(),
            });
        }
        if let Some(bucket) = data.last_mut() {
            bucket.results.push(UsageResult {
                start_time: None,
                ..total.into()
            });
        }
    }
    Ok(Json(UsagePage {
        object: "page",
        data,
        has_more: false,
    }))
}

/// Usage of every key, grouped by key, model and/or day.
#[utoipa::path(get, path = "/admin/usage", tag = "admin", security(("api_key" = [])),
    params(ReportQuery),
    responses((status = 200, description = "The report", body = UsageReport),
              (status = 400, description = "Invalid parameters, or no platform database", body = ErrorBody),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 403, description = "The key lacks the admin scope", body = ErrorBody)))]
pub(crate) async fn usage_report(
    State(state): State<AppState>,
    params: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Json<UsageReport>, ApiError> {
    let params = query(params)?;
    let (since, until) = time_range(params.start_time, params.end_time)?;
    let mut groups: Vec<UsageGroup> = Vec::new();
    for name in params.group_by.as_deref().unwrap_or("key").split(',') {
        let group = UsageGroup::parse(name).map_err(|e| ApiError {
            param: Some("group_by".into()),
            ..ApiError::from(e)
        })?;
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    if params
        .key_id
        .as_deref()
        .is_some_and(|id| !helixflow_core::platform::is_plausible_key_id(id))
    {
        return Err(ApiError::invalid_param(
            "key_id",
            "key_id is a key's id: up to 64 characters of A-Z, a-z, 0-9 and _",
        ));
    }
    let filter = UsageFilter {
        key_id: params.key_id,
        user_id: None,
        since: Some(since),
        until,
    };
    let totals = store(&state)?
        .usage_report(&filter, &groups)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(UsageReport {
        object: "list",
        group_by: groups,
        data: totals.into_iter().map(UsageResult::from).collect(),
    }))
}

/// The limits new keys get for each limit they leave unset.
#[utoipa::path(get, path = "/admin/key-defaults", tag = "admin", security(("api_key" = [])),
    responses((status = 200, description = "The default limits (`null`: unlimited)", body = KeyLimits),
              (status = 400, description = "No platform database", body = ErrorBody),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 403, description = "The key lacks the admin scope", body = ErrorBody)))]
pub(crate) async fn key_defaults(
    State(state): State<AppState>,
) -> Result<Json<KeyLimits>, ApiError> {
    let defaults = store(&state)?
        .key_defaults()
        .await
        .map_err(ApiError::from)?;
    Ok(Json(defaults))
}

/// Replaces the limits new keys get; keys already made keep theirs.
#[utoipa::path(put, path = "/admin/key-defaults", tag = "admin", security(("api_key" = [])),
    request_body = KeyDefaultsRequest,
    responses((status = 200, description = "The new default limits", body = KeyLimits),
              (status = 400, description = "Invalid limits, or no platform database", body = ErrorBody),
              (status = 401, description = "No or a wrong API key", body = ErrorBody),
              (status = 403, description = "The key lacks the admin scope", body = ErrorBody)))]
pub(crate) async fn set_key_defaults(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<KeyLimits>, ApiError> {
    let request: KeyDefaultsRequest = parse_body(body)?;
    let defaults = KeyLimits {
        rpm: request.rpm,
        tpm: request.tpm,
        budget_tokens: request.budget_tokens,
        budget_period: request.budget_period,
    };
    store(&state)?
        .set_key_defaults(&defaults)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(defaults))
}

//! Usage accounting: one record per request (who, which model and endpoint, tokens, outcome,
//! timings), stored in batches by the [`UsageRecorder`](super::UsageRecorder), and the
//! queries behind usage reports.

use sqlx::QueryBuilder;

use super::store::on_pool;
use super::{PlatformError, Store};

/// One request's usage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageRecord {
    /// The request's id (the response's `id`, or its `x-request-id`), when it has one.
    pub request_id: Option<String>,
    /// The API key that made the request, if one did.
    pub key_id: Option<String>,
    /// The user the request was made for, if known.
    pub user_id: Option<String>,
    /// The model.
    pub model: String,
    /// The endpoint (`/v1/chat/completions`, or the gRPC method).
    pub endpoint: String,
    /// Prompt (input) tokens.
    pub prompt_tokens: u64,
    /// Generated tokens, over every choice.
    pub completion_tokens: u64,
    /// The outcome as an HTTP status (499: the client went away).
    pub status: u16,
    /// Whether the request was cut off (the client went away, or the timeout) before it ended.
    pub cancelled: bool,
    /// Milliseconds to the first generated token, for generations that produced one.
    pub ttft_ms: Option<u64>,
    /// Milliseconds from admission to the end.
    pub latency_ms: u64,
    /// When the request ended (Unix seconds).
    pub created_at: i64,
}

/// Which records a query covers; unset fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    /// Only this key's requests.
    pub key_id: Option<String>,
    /// Only this user's requests.
    pub user_id: Option<String>,
    /// From this time on (Unix seconds, inclusive).
    pub since: Option<i64>,
    /// Before this time (Unix seconds, exclusive).
    pub until: Option<i64>,
}

/// What a usage report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum UsageGroup {
    /// The API key.
    Key,
    /// The model.
    Model,
    /// The UTC day.
    Day,
}

impl UsageGroup {
    /// Parses `key`, `model` or `day`.
    pub fn parse(name: &str) -> Result<Self, PlatformError> {
        match name.trim() {
            "key" => Ok(UsageGroup::Key),
            "model" => Ok(UsageGroup::Model),
            "day" => Ok(UsageGroup::Day),
            other => Err(PlatformError::invalid(format!(
                "cannot group usage by `{other}`: use key, model or day"
            ))),
        }
    }

    /// The column expression, or a typed NULL when the report does not group by it.
    fn select(self, grouped: bool) -> &'static str {
        match (self, grouped) {
            (UsageGroup::Key, true) => "key_id",
            (UsageGroup::Model, true) => "model",
            (UsageGroup::Day, true) => "created_at - (created_at % 86400)",
            (UsageGroup::Key | UsageGroup::Model, false) => "CAST(NULL AS TEXT)",
            (UsageGroup::Day, false) => "CAST(NULL AS BIGINT)",
        }
    }
}

/// The totals of one group of a usage report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageTotals {
    /// The key, when grouped by key (`None` there: requests without a key).
    pub key_id: Option<String>,
    /// The model, when grouped by model.
    pub model: Option<String>,
    /// The day's start (Unix seconds, UTC), when grouped by day.
    pub day: Option<i64>,
    /// Requests.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Requests cut off before they ended.
    pub cancelled: u64,
    /// Requests that ended with an error status.
    pub failed: u64,
}

#[derive(sqlx::FromRow)]
struct RecordRow {
    request_id: Option<String>,
    key_id: Option<String>,
    user_id: Option<String>,
    model: String,
    endpoint: String,
    prompt_tokens: i64,
    completion_tokens: i64,
    status: i64,
    cancelled: bool,
    ttft_ms: Option<i64>,
    latency_ms: i64,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct TotalsRow {
    key_id: Option<String>,
    model: Option<String>,
    day: Option<i64>,
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cancelled: i64,
    failed: i64,
}

/// Records per INSERT statement: 13 parameters each stays far below either database's limit
/// on parameters.
const ROWS_PER_INSERT: usize = 500;

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

fn stored(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Appends ` WHERE ...` for `filter` to `query`, with bound values only.
macro_rules! push_filter {
    ($query:expr, $filter:expr) => {{
        let filter: &UsageFilter = $filter;
        $query.push(" WHERE 1 = 1");
        if let Some(key_id) = &filter.key_id {
            $query.push(" AND key_id = ").push_bind(key_id.clone());
        }
        if let Some(user_id) = &filter.user_id {
            $query.push(" AND user_id = ").push_bind(user_id.clone());
        }
        if let Some(since) = filter.since {
            $query.push(" AND created_at >= ").push_bind(since);
        }
        if let Some(until) = filter.until {
            $query.push(" AND created_at < ").push_bind(until);
        }
    }};
}

impl Store {
    /// Stores `records` in one transaction, several rows per statement.
    pub async fn insert_usage(&self, records: &[UsageRecord]) -> Result<(), PlatformError> {
        if records.is_empty() {
            return Ok(());
        }
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for chunk in records.chunks(ROWS_PER_INSERT) {
                let mut query = QueryBuilder::new(
                    "INSERT INTO usage_records (request_id, key_id, user_id, model, endpoint, \
                     prompt_tokens, completion_tokens, status, cancelled, ttft_ms, latency_ms, \
                     created_at) ",
                );
                query.push_values(chunk, |mut row, r| {
                    row.push_bind(r.request_id.clone())
                        .push_bind(r.key_id.clone())
                        .push_bind(r.user_id.clone())
                        .push_bind(r.model.clone())
                        .push_bind(r.endpoint.clone())
                        .push_bind(stored(r.prompt_tokens))
                        .push_bind(stored(r.completion_tokens))
                        .push_bind(i64::from(r.status))
                        .push_bind(r.cancelled)
                        .push_bind(r.ttft_ms.map(stored))
                        .push_bind(stored(r.latency_ms))
                        .push_bind(r.created_at);
                });
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The records `filter` covers, newest first, at most `limit`.
    pub async fn usage_records(
        &self,
        filter: &UsageFilter,
        limit: u32,
    ) -> Result<Vec<UsageRecord>, PlatformError> {
        let rows: Vec<RecordRow> = on_pool!(self, |pool| {
            let mut query = QueryBuilder::new(
                "SELECT request_id, key_id, user_id, model, endpoint, prompt_tokens, \
                 completion_tokens, status, cancelled, ttft_ms, latency_ms, created_at \
                 FROM usage_records",
            );
            push_filter!(query, filter);
            query
                .push(" ORDER BY created_at DESC, id DESC LIMIT ")
                .push_bind(i64::from(limit));
            query.build_query_as().fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|r| UsageRecord {
                request_id: r.request_id,
                key_id: r.key_id,
                user_id: r.user_id,
                model: r.model,
                endpoint: r.endpoint,
                prompt_tokens: count(r.prompt_tokens),
                completion_tokens: count(r.completion_tokens),
                status: u16::try_from(r.status).unwrap_or(0),
                cancelled: r.cancelled,
                ttft_ms: r.ttft_ms.map(count),
                latency_ms: count(r.latency_ms),
                created_at: r.created_at,
            })
            .collect())
    }

    /// Totals of the records `filter` covers, grouped by `groups` (none: one grand total),
    /// ordered by day, key and model.
    pub async fn usage_report(
        &self,
        filter: &UsageFilter,
        groups: &[UsageGroup],
    ) -> Result<Vec<UsageTotals>, PlatformError> {
        let by = |g: UsageGroup| groups.contains(&g);
        let select = format!(
            "SELECT {} AS key_id, {} AS model, {} AS day, COUNT(*) AS requests, \
             CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
             CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
             CAST(COALESCE(SUM(CASE WHEN cancelled THEN 1 ELSE 0 END), 0) AS BIGINT) \
             AS cancelled, \
             CAST(COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS BIGINT) \
             AS failed \
             FROM usage_records",
            UsageGroup::Key.select(by(UsageGroup::Key)),
            UsageGroup::Model.select(by(UsageGroup::Model)),
            UsageGroup::Day.select(by(UsageGroup::Day)),
        );
        // Group by the selected expressions (by position: both databases accept it).
        let positions: Vec<&str> = [
            (UsageGroup::Day, "3"),
            (UsageGroup::Key, "1"),
            (UsageGroup::Model, "2"),
        ]
        .iter()
        .filter(|(g, _)| by(*g))
        .map(|(_, p)| *p)
        .collect();
        let rows: Vec<TotalsRow> = on_pool!(self, |pool| {
            let mut query = QueryBuilder::new(select.as_str());
            push_filter!(query, filter);
            if !positions.is_empty() {
                let list = positions.join(", ");
                query.push(format!(" GROUP BY {list} ORDER BY {list}"));
            }
            query.build_query_as().fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            // One grand total over no records is a row of zeros: no group.
            .filter(|r| r.requests > 0)
            .map(|r| UsageTotals {
                key_id: r.key_id,
                model: r.model,
                day: r.day,
                requests: count(r.requests),
                prompt_tokens: count(r.prompt_tokens),
                completion_tokens: count(r.completion_tokens),
                cancelled: count(r.cancelled),
                failed: count(r.failed),
            })
            .collect())
    }
}

//! Rate limits and token budgets per API key, enforced in the database so that replicas
//! sharing it agree exactly.
//!
//! Each limit is a counter row per key and window: requests and tokens per minute use fixed
//! one-minute windows, a budget the UTC day or calendar month. [`Store::reserve`] adds a
//! request's worst case (its prompt and every token it may generate) to every counter of the
//! key in one transaction, each with a conditional upsert that only adds while the counter
//! stays within its limit; if one refuses, the transaction rolls back and nothing is taken.
//! [`Store::settle`] then corrects the token counters to what the request really used.

use super::store::on_pool;
use super::{ApiKey, Backend, BudgetPeriod, PlatformError, Store};
use crate::calendar::{civil_from_days, days_from_civil};

/// One of a key's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Limit {
    /// Requests per minute.
    Requests,
    /// Tokens (prompt and completion) per minute.
    Tokens,
    /// Tokens per budget period (day or month).
    Budget,
}

impl Limit {
    /// The limit's name in `x-ratelimit-*` headers and error types: `requests`, `tokens` or
    /// `budget`.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Requests => "requests",
            Limit::Tokens => "tokens",
            Limit::Budget => "budget",
        }
    }

    /// The counter's `kind` in the database.
    fn kind(self) -> &'static str {
        match self {
            Limit::Requests => "rpm",
            Limit::Tokens => "tpm",
            Limit::Budget => "budget",
        }
    }
}

/// Where a key stands against one limit: what the `x-ratelimit-*` headers tell the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    /// Which limit.
    pub limit: Limit,
    /// The limit itself.
    pub max: u64,
    /// What is left of it in this window.
    pub remaining: u64,
    /// Seconds until the window resets (at least 1).
    pub reset_after: u64,
}

/// What an admitted request holds against its key's counters, to settle when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    key_id: String,
    tokens: u64,
    /// The windows (starts) of the token counters the reservation added to.
    token_windows: Vec<(Limit, i64)>,
    status: Vec<LimitStatus>,
}

impl Reservation {
    /// The tokens reserved.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// The key's standing against each of its limits after this admission.
    pub fn status(&self) -> &[LimitStatus] {
        &self.status
    }
}

/// A request refused because it would take a key past one of its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRefusal {
    /// The limit that refused.
    pub limit: Limit,
    /// The limit's value.
    pub max: u64,
    /// What was already used of it in this window.
    pub used: u64,
    /// What the request asked for (1 request, or its token reservation).
    pub requested: u64,
    /// Seconds until the refusing window resets (at least 1).
    pub retry_after: u64,
    /// The key's standing against each of its limits.
    pub status: Vec<LimitStatus>,
}

impl QuotaRefusal {
    /// Whether the request alone is larger than the limit, so that waiting cannot help.
    pub fn never_fits(&self) -> bool {
        self.requested > self.max
    }
}

impl std::fmt::Display for QuotaRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (Self { max, used, .. }, what) = (self, self.limit.as_str());
        let period = match self.limit {
            Limit::Requests | Limit::Tokens => "per minute",
            Limit::Budget => "in this budget period",
        };
        if self.never_fits() {
            return match self.limit {
                Limit::Requests => write!(f, "This API key allows no requests ({max} {period})."),
                _ => write!(
                    f,
                    "This request may use {} tokens (its prompt plus max_tokens for every \
                     choice), more than this API key's limit of {max} {what} {period}: lower \
                     max_tokens or shorten the prompt.",
                    self.requested
                ),
            };
        }
        write!(
            f,
            "Rate limit reached for {what}: limit {max} {period}, used {used}, requested {}. \
             Please try again in {}s.",
            self.requested, self.retry_after
        )
    }
}

/// Why a reservation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// A limit refused the request.
    #[error("{0}")]
    Refused(QuotaRefusal),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] PlatformError),
    /// The admission stopped before it finished (it panicked, or the runtime is shutting
    /// down).
    #[error("the admission was interrupted: {0}")]
    Interrupted(String),
}

impl From<sqlx::Error> for QuotaError {
    fn from(e: sqlx::Error) -> Self {
        QuotaError::Store(e.into())
    }
}

/// One counter a reservation adds to.
#[derive(Debug, Clone, Copy)]
struct Step {
    limit: Limit,
    window: Window,
    amount: u64,
    max: u64,
}

/// A window of time: `[start, end)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) start: i64,
    pub(crate) end: i64,
}

impl Window {
    /// The fixed minute holding `now`.
    pub(crate) fn minute(now: i64) -> Self {
        let start = now - now.rem_euclid(60);
        Self {
            start,
            end: start + 60,
        }
    }

    /// The UTC day or calendar month holding `now`.
    pub(crate) fn budget(period: BudgetPeriod, now: i64) -> Self {
        let day = now.div_euclid(86_400);
        match period {
            BudgetPeriod::Day => Self {
                start: day * 86_400,
                end: (day + 1) * 86_400,
            },
            BudgetPeriod::Month => {
                let (year, month, _) = civil_from_days(day);
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                Self {
                    start: days_from_civil(year, month, 1) * 86_400,
                    end: days_from_civil(next_year, next_month, 1) * 86_400,
                }
            }
        }
    }

    /// Seconds from `now` to the window's end, at least 1.
    fn left(self, now: i64) -> u64 {
        u64::try_from(self.end - now).unwrap_or(0).max(1)
    }
}

/// The counters a request of `tokens` takes from `key` at `now`, in a fixed order (so that
/// concurrent transactions lock rows in the same order and cannot deadlock).
fn steps(key: &ApiKey, tokens: u64, now: i64) -> Vec<Step> {
    let limits = &key.limits;
    let minute = Window::minute(now);
    let mut steps = Vec::with_capacity(3);
    if let Some(max) = limits.rpm {
        steps.push(Step {
            limit: Limit::Requests,
            window: minute,
            amount: 1,
            max,
        });
    }
    if let Some(max) = limits.tpm {
        steps.push(Step {
            limit: Limit::Tokens,
            window: minute,
            amount: tokens,
            max,
        });
    }
    if let (Some(max), Some(period)) = (limits.budget_tokens, limits.budget_period) {
        steps.push(Step {
            limit: Limit::Budget,
            window: Window::budget(period, now),
            amount: tokens,
            max,
        });
    }
    steps
}

/// A count as the database stores it (BIGINT).
fn stored(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Adds `$4` to a counter, creating it, unless that takes it past `$5`: no row comes back then.
/// (A fresh row is only inserted when `$4 <= $5`, which [`Store::reserve`] checks first.)
const TAKE: &str = "INSERT INTO quota_counters (key_id, kind, window_start, used) \
                    VALUES ($1, $2, $3, $4) \
                    ON CONFLICT (key_id, kind, window_start) DO UPDATE \
                    SET used = quota_counters.used + $4 \
                    WHERE quota_counters.used + $4 <= $5 \
                    RETURNING used";

/// Quota transactions on PostgreSQL commit without waiting for the WAL flush: every request
/// of a key updates the same counter rows, so waiting for an fsync while holding their locks
/// would make one key's requests queue behind the disk (at 1,000 requests/s: p50 189 ms
/// against 0.8 ms without). The price: if PostgreSQL itself crashes, the counters may lose
/// their last fraction of a second of updates (admissions, never usage records).
const ASYNC_COMMIT: &str = "SET LOCAL synchronous_commit TO OFF";

impl Store {
    /// Reserves one request and `tokens` tokens against every limit of `key` at `now` (Unix
    /// seconds), all or nothing. A key without limits needs no database work. The answer
    /// carries the key's standing for the `x-ratelimit-*` headers; a refusal says which limit
    /// refused and when to retry.
    pub async fn reserve(
        &self,
        key: &ApiKey,
        tokens: u64,
        now: i64,
    ) -> Result<Reservation, QuotaError> {
        let steps = steps(key, tokens, now);
        let mut reservation = Reservation {
            key_id: key.id.clone(),
            tokens,
            token_windows: Vec::new(),
            status: Vec::new(),
        };
        if steps.is_empty() {
            return Ok(reservation);
        }
        // A request larger than a limit is refused without touching the counters.
        if let Some(index) = steps.iter().position(|s| s.amount > s.max) {
            return Err(self.refusal(key, &steps, index, now).await);
        }
        let postgres = self.backend() == Backend::Postgres;
        let taken: Result<Vec<i64>, usize> = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            if postgres {
                sqlx::query(ASYNC_COMMIT).execute(&mut *tx).await?;
            }
            let mut used = Vec::with_capacity(steps.len());
            let mut refused = None;
            for (index, step) in steps.iter().enumerate() {
                let row: Option<i64> = sqlx::query_scalar(TAKE)
                    .bind(&key.id)
                    .bind(step.limit.kind())
                    .bind(step.window.start)
                    .bind(stored(step.amount))
                    .bind(stored(step.max))
                    .fetch_optional(&mut *tx)
                    .await?;
                match row {
                    Some(n) => used.push(n),
                    None => {
                        refused = Some(index);
                        break;
                    }
                }
            }
            match refused {
                None => {
                    tx.commit().await?;
                    Ok(used)
                }
                Some(index) => {
                    tx.rollback().await?;
                    Err(index)
                }
            }
        });
        let used = match taken {
            Ok(used) => used,
            Err(index) => return Err(self.refusal(key, &steps, index, now).await),
        };
        for (step, used) in steps.iter().zip(used) {
            if step.limit != Limit::Requests {
                reservation
                    .token_windows
                    .push((step.limit, step.window.start));
            }
            reservation.status.push(LimitStatus {
                limit: step.limit,
                max: step.max,
                remaining: step.max.saturating_sub(used.max(0) as u64),
                reset_after: step.window.left(now),
            });
        }
        Ok(reservation)
    }

    /// Corrects a reservation's token counters to `actual` tokens: the rest is given back (a
    /// counter never goes below zero), or the excess charged. Counters of windows that have
    /// since been pruned are left alone.
    pub async fn settle(
        &self,
        reservation: &Reservation,
        actual: u64,
    ) -> Result<(), PlatformError> {
        if actual == reservation.tokens || reservation.token_windows.is_empty() {
            return Ok(());
        }
        let delta = stored(actual) - stored(reservation.tokens);
        let sql = "UPDATE quota_counters \
                   SET used = CASE WHEN used + $1 < 0 THEN 0 ELSE used + $1 END \
                   WHERE key_id = $2 AND kind = $3 AND window_start = $4";
        let postgres = self.backend() == Backend::Postgres;
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            if postgres {
                sqlx::query(ASYNC_COMMIT).execute(&mut *tx).await?;
            }
            for (limit, start) in &reservation.token_windows {
                sqlx::query(sql)
                    .bind(delta)
                    .bind(&reservation.key_id)
                    .bind(limit.kind())
                    .bind(start)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes counters of windows that have ended (minute counters after two minutes, budget
    /// counters after two months); they only take room.
    pub async fn prune_quota_counters(&self, now: i64) -> Result<u64, PlatformError> {
        let sql = "DELETE FROM quota_counters \
                   WHERE (kind IN ('rpm', 'tpm') AND window_start < $1) \
                      OR (kind = 'budget' AND window_start < $2)";
        let deleted = on_pool!(self, |pool| sqlx::query(sql)
            .bind(now - 120)
            .bind(now - 62 * 86_400)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(deleted)
    }

    /// What a refusal by `steps[index]` tells the client, from the counters as they are now.
    async fn refusal(&self, key: &ApiKey, steps: &[Step], index: usize, now: i64) -> QuotaError {
        let sql = "SELECT used FROM quota_counters \
                   WHERE key_id = $1 AND kind = $2 AND window_start = $3";
        let mut status = Vec::with_capacity(steps.len());
        let mut refused_used = 0;
        for (i, step) in steps.iter().enumerate() {
            let used: Result<Option<i64>, sqlx::Error> = on_pool!(self, |pool| {
                sqlx::query_scalar(sql)
                    .bind(&key.id)
                    .bind(step.limit.kind())
                    .bind(step.window.start)
                    .fetch_optional(pool)
                    .await
            });
            let used = match used {
                Ok(used) => used.unwrap_or(0).max(0) as u64,
                Err(e) => return QuotaError::from(e),
            };
            if i == index {
                refused_used = used;
            }
            status.push(LimitStatus {
                limit: step.limit,
                max: step.max,
                remaining: step.max.saturating_sub(used),
                reset_after: step.window.left(now),
            });
        }
        let step = steps[index];
        QuotaError::Refused(QuotaRefusal {
            limit: step.limit,
            max: step.max,
            used: refused_used,
            requested: step.amount,
            retry_after: step.window.left(now),
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_months_and_days() {
        // 2024-02-29T12:00:00Z: a leap day.
        let leap = 1_709_208_000;
        let month = Window::budget(BudgetPeriod::Month, leap);
        assert_eq!(month.start, 1_706_745_600); // 2024-02-01
        assert_eq!(month.end, 1_709_251_200); // 2024-03-01
        let december = Window::budget(BudgetPeriod::Month, 1_735_603_200); // 2024-12-31
        assert_eq!(december.start, 1_733_011_200); // 2024-12-01
        assert_eq!(december.end, 1_735_689_600); // 2025-01-01
        let day = Window::budget(BudgetPeriod::Day, leap);
        assert_eq!((day.start, day.end), (1_709_164_800, 1_709_251_200));
        assert_eq!(
            Window::minute(119),
            Window {
                start: 60,
                end: 120
            }
        );
        assert_eq!(Window::minute(120).left(120), 60);
        assert_eq!(Window::minute(179).left(179), 1);
    }
}

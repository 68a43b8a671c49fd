//! The limits a new key gets for each limit it leaves unset, kept in the database so that
//! every replica and the CLI agree.

use super::store::on_pool;
use super::{BudgetPeriod, KeyLimits, PlatformError, Store};

impl KeyLimits {
    /// These limits, with each unset one taken from `defaults` (the budget's token count and
    /// period together).
    pub fn or_defaults(self, defaults: &KeyLimits) -> KeyLimits {
        let budget_set = self.budget_tokens.is_some() || self.budget_period.is_some();
        KeyLimits {
            rpm: self.rpm.or(defaults.rpm),
            tpm: self.tpm.or(defaults.tpm),
            budget_tokens: if budget_set {
                self.budget_tokens
            } else {
                defaults.budget_tokens
            },
            budget_period: if budget_set {
                self.budget_period
            } else {
                defaults.budget_period
            },
        }
    }

    /// Whether no limit is set.
    pub fn is_unlimited(&self) -> bool {
        self == &KeyLimits::default()
    }

    /// An error unless the budget has both a token count and a period, or neither.
    pub(crate) fn check(&self) -> Result<(), PlatformError> {
        if self.budget_tokens.is_some() != self.budget_period.is_some() {
            return Err(PlatformError::invalid(
                "a budget needs both a token count and a period",
            ));
        }
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct DefaultsRow {
    rpm: Option<i64>,
    tpm: Option<i64>,
    budget_tokens: Option<i64>,
    budget_period: Option<String>,
}

impl Store {
    /// The limits new keys get where they set none (all unset when never configured).
    pub async fn key_defaults(&self) -> Result<KeyLimits, PlatformError> {
        let sql = "SELECT rpm, tpm, budget_tokens, budget_period FROM key_defaults WHERE id = 1";
        let row: Option<DefaultsRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .fetch_optional(pool)
            .await?);
        let Some(row) = row else {
            return Ok(KeyLimits::default());
        };
        let count = |v: Option<i64>| v.map(|n| n.max(0) as u64);
        Ok(KeyLimits {
            rpm: count(row.rpm),
            tpm: count(row.tpm),
            budget_tokens: count(row.budget_tokens),
            budget_period: row
                .budget_period
                .as_deref()
                .map(BudgetPeriod::parse)
                .transpose()?,
        })
    }

    /// Replaces the limits new keys get where they set none; keys already made keep theirs.
    pub async fn set_key_defaults(&self, defaults: &KeyLimits) -> Result<(), PlatformError> {
        defaults.check()?;
        let sql = "INSERT INTO key_defaults (id, rpm, tpm, budget_tokens, budget_period) \
                   VALUES (1, $1, $2, $3, $4) \
                   ON CONFLICT (id) DO UPDATE SET rpm = $1, tpm = $2, budget_tokens = $3, \
                   budget_period = $4";
        let stored = |v: Option<u64>| v.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(stored(defaults.rpm))
            .bind(stored(defaults.tpm))
            .bind(stored(defaults.budget_tokens))
            .bind(defaults.budget_period.map(|p| p.as_str()))
            .execute(pool)
            .await
            .map(|_| ())?);
        Ok(())
    }
}

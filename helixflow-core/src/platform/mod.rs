//! The platform: API keys, users, quotas and rate limits ([`Meter`]) and usage accounting
//! ([`UsageRecorder`]), stored through `sqlx` in SQLite or PostgreSQL. The server, the CLI and
//! the Python binding share this one API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), helixflow_core::platform::PlatformError> {
//! use helixflow_core::platform::{NewKey, Store};
//! let store = Store::connect("sqlite://helixflow.db").await?;
//! store.migrate().await?;
//! let created = store.create_key(NewKey::inference("ci")).await?;
//! let key = store.verify_key(&created.secret).await?.expect("a fresh key works");
//! assert_eq!(key.name, "ci");
//! # Ok(())
//! # }
//! ```

mod auth;
mod data_dir;
mod defaults;
mod keys;
mod meter;
mod quota;
mod recorder;
mod responses;
pub(crate) mod store;
mod tokens;
mod usage;
mod users;

pub use crate::calendar::utc_date;
pub use auth::{Authenticator, Caller, CACHE_TTL};
pub use data_dir::{prepare_data_dir, write_private_file};
pub use keys::{is_plausible_key_id, ApiKey, BudgetPeriod, CreatedKey, KeyLimits, NewKey, Scope};
pub use meter::{Meter, Metered, MeteredRequest, Progress, CLIENT_CLOSED};
pub use quota::{Limit, LimitStatus, QuotaError, QuotaRefusal, Reservation};
pub use recorder::{UsageRecorder, FLUSH_INTERVAL};
pub use responses::StoredResponse;
pub use store::{Backend, Store};
pub use tokens::{
    looks_like_jwt, AccessToken, LoginOutcome, LoginPolicy, TokenId, TokenSecret, UserSession,
    DEFAULT_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME,
};
pub use usage::{UsageFilter, UsageGroup, UsageRecord, UsageTotals};
pub use users::{NewUser, User, MAX_PASSWORD_CHARS, MAX_USERNAME_CHARS, MIN_PASSWORD_CHARS};

/// What can go wrong in the platform's store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// The database URL or settings are wrong.
    #[error("{0}")]
    Config(String),
    /// The request to the store is invalid (a bad scope, an empty name, ...).
    #[error("{0}")]
    Invalid(String),
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    /// A newer HelixFlow has migrated this database past what this version knows.
    #[error(
        "the database has migration {version}, which this HelixFlow does not know: it was \
         made by a newer version; upgrade HelixFlow or use another database"
    )]
    NewerSchema {
        /// The unknown migration's version.
        version: i64,
    },
    /// The request clashes with what is stored (a username that is taken).
    #[error("{0}")]
    Conflict(String),
    /// Hashing a password or signing a token failed.
    #[error("cryptography failed: {0}")]
    Crypto(String),
}

impl PlatformError {
    /// How front ends report this error: the caller's mistakes, clashes, and server faults.
    pub fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            Self::Invalid(_) => ErrorClass::InvalidRequest,
            Self::Conflict(_) => ErrorClass::Conflict,
            _ => ErrorClass::Internal,
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::Config(message.into())
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

/// Seconds since the Unix epoch, as the database stores times.
pub(crate) fn unix_now() -> i64 {
    i64::try_from(crate::completion::unix_now()).unwrap_or(i64::MAX)
}

//! The database behind the platform: SQLite (a file in the data directory, WAL mode) or
//! PostgreSQL, chosen by URL, with versioned migrations for each.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::tokens::TokenSecret;
use super::PlatformError;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, for one machine.
    Sqlite,
    /// PostgreSQL, shared by replicas.
    Postgres,
}

/// A connection pool to the platform's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// The server's half of the access-token key (see [`TokenSecret`]).
    token_secret: Option<TokenSecret>,
}

#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same statement on whichever pool the store has; the SQL is written once, in the
/// dialect both backends accept (`$1` placeholders, `BIGINT` times in Unix seconds).
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store.pool() {
            $crate::platform::store::Pool::Sqlite($pool) => $body,
            $crate::platform::store::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://...`); a SQLite file is created if
    /// missing and put in WAL mode. Does not migrate: see [`Store::migrate`].
    pub async fn connect(url: &str) -> Result<Self, PlatformError> {
        let pool = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| PlatformError::config(format!("bad SQLite URL `{url}`: {e}")))?;
            // Made private before SQLite opens it; its journal files take its mode.
            let file = options.get_filename();
            if file != Path::new(":memory:") && !file.as_os_str().is_empty() {
                super::data_dir::create_private_file(file)?;
            }
            let options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // WAL with NORMAL sync is crash-safe for the database; only a power loss can
                // drop the last commits, and it spares an fsync per quota transaction.
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5));
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(8)
                    .connect_with(options)
                    .await?,
            )
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await?,
            )
        } else {
            return Err(PlatformError::config(format!(
                "DATABASE_URL must start with sqlite:// or postgres://, not `{url}`"
            )));
        };
        Ok(Self {
            pool,
            token_secret: None,
        })
    }

    /// This store with the server's token secret, which access tokens need.
    pub fn with_token_secret(mut self, secret: TokenSecret) -> Self {
        self.token_secret = Some(secret);
        self
    }

    pub(crate) fn token_secret(&self) -> Option<&TokenSecret> {
        self.token_secret.as_ref()
    }

    /// The database URL the environment names, else a SQLite file in `data_dir`:
    /// `DATABASE_URL`, or the original platform's `DATABASE_TYPE=sqlite|postgres` with
    /// `DATABASE_PATH` (SQLite) or `DATABASE_URL` (PostgreSQL).
    pub fn url_from_env(data_dir: &Path) -> Result<String, PlatformError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let sqlite_file = |path: &str| format!("sqlite://{path}");
        let default_file = || sqlite_file(&data_dir.join("helixflow.db").to_string_lossy());
        match var("DATABASE_TYPE").as_deref() {
            None => Ok(var("DATABASE_URL").unwrap_or_else(default_file)),
            Some("sqlite") => Ok(var("DATABASE_PATH")
                .map(|p| sqlite_file(&p))
                .unwrap_or_else(default_file)),
            Some("postgres" | "postgresql") => var("DATABASE_URL")
                .ok_or_else(|| PlatformError::config("DATABASE_TYPE=postgres needs DATABASE_URL")),
            Some(other) => Err(PlatformError::config(format!(
                "DATABASE_TYPE must be sqlite or postgres, not `{other}`"
            ))),
        }
    }

    /// Applies the migrations this version knows that the database lacks. A database that
    /// a newer HelixFlow has migrated further is refused.
    pub async fn migrate(&self) -> Result<(), PlatformError> {
        let result = match &self.pool {
            Pool::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await,
            Pool::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
        };
        result.map_err(|e| match e {
            MigrateError::VersionMissing(version) => PlatformError::NewerSchema { version },
            other => PlatformError::Migrate(other),
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Closes every connection.
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }
}

//! Fresh platform stores for the store test suites: a SQLite file in a temporary directory,
//! and a PostgreSQL database made for the test and dropped after it.
//!
//! PostgreSQL: `HELIXFLOW_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`)
//! names a server on which each test creates, and then drops, a fresh database. Without a
//! server the PostgreSQL tests say they were skipped, unless `HELIXFLOW_REQUIRE_POSTGRES=1`
//! (set by CI), where they fail.

use helixflow_core::platform::Store;
use sqlx::Connection;

/// A fresh store of one backend.
pub struct Fresh {
    /// The migrated store.
    pub store: Store,
    /// Its URL, for a second connection pool (another replica).
    pub url: String,
    /// The SQLite file's directory (removed on drop).
    pub dir: Option<tempfile::TempDir>,
    drop_db: Option<(String, String)>,
}

pub async fn sqlite() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_token_secret(helixflow_core::platform::TokenSecret::from_bytes([7; 32]));
    store.migrate().await.unwrap();
    Fresh {
        store,
        url,
        dir: Some(dir),
        drop_db: None,
    }
}

pub async fn postgres() -> Option<Fresh> {
    let admin_url = std::env::var("HELIXFLOW_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let required = std::env::var("HELIXFLOW_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(conn) => conn,
        Err(e) if !required => {
            eprintln!("SKIPPED the PostgreSQL half of this test: no server at {admin_url}: {e}");
            return None;
        }
        Err(e) => panic!("PostgreSQL is required (HELIXFLOW_REQUIRE_POSTGRES=1): {admin_url}: {e}"),
    };
    let name = format!("helixflow_test_{:016x}", rand::random::<u64>());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_token_secret(helixflow_core::platform::TokenSecret::from_bytes([7; 32]));
    store.migrate().await.unwrap();
    Some(Fresh {
        store,
        url,
        dir: None,
        drop_db: Some((admin_url, name)),
    })
}

impl Fresh {
    /// Closes the store and drops its PostgreSQL database.
    pub async fn finish(self) {
        self.store.close().await;
        if let Some((admin_url, name)) = self.drop_db {
            let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .unwrap();
        }
    }
}

/// Runs `suite` on SQLite and, when reachable, on PostgreSQL.
#[macro_export]
macro_rules! on_both {
    ($name:ident, $suite:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let fresh = $crate::common::stores::sqlite().await;
                super::$suite(&fresh.store).await;
                fresh.finish().await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(fresh) = $crate::common::stores::postgres().await {
                    super::$suite(&fresh.store).await;
                    fresh.finish().await;
                }
            }
        }
    };
}

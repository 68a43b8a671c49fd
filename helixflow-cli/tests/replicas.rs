//! Two `helixflow serve` replicas sharing one PostgreSQL database: rate limits and budgets
//! hold across both, and a key revoked through one is refused by the other within a second.
//!
//! PostgreSQL: `HELIXFLOW_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`)
//! names a server on which the test makes, and then drops, its own database. Without one the
//! test says it was skipped, unless `HELIXFLOW_REQUIRE_POSTGRES=1` (CI), where it fails.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sqlx::Connection;

/// A database of its own on the test PostgreSQL server, dropped at the end.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Database {
    fn create(runtime: &tokio::runtime::Runtime) -> Option<Self> {
        let admin_url = std::env::var("HELIXFLOW_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let required = std::env::var("HELIXFLOW_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
        let name = format!("helixflow_replicas_{:016x}", rand::random::<u64>());
        let created = runtime.block_on(async {
            let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .map(|_| ())
        });
        match created {
            Ok(()) => {}
            Err(e) if !required => {
                eprintln!("SKIPPED: no PostgreSQL at {admin_url}: {e}");
                return None;
            }
            Err(e) => panic!("PostgreSQL is required (HELIXFLOW_REQUIRE_POSTGRES=1): {e}"),
        }
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        Some(Self {
            admin_url,
            name,
            url,
        })
    }

    fn drop_with(self, runtime: &tokio::runtime::Runtime) {
        runtime.block_on(async {
            let mut admin = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
            sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await
            .unwrap();
        });
    }
}

/// Runs `helixflow ARGS` on the database.
fn helixflow(database: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_helixflow"))
        .args(args)
        .env("DATABASE_URL", database)
        .output()
        .expect("the binary runs")
}

/// Makes a key with `flags` and returns its id and secret.
fn key(database: &str, flags: &[&str]) -> (String, String) {
    let args: Vec<&str> = ["keys", "create", "--json"]
        .iter()
        .chain(flags)
        .copied()
        .collect();
    let out = helixflow(database, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        created["id"].as_str().unwrap().to_string(),
        created["key"].as_str().unwrap().to_string(),
    )
}

/// A replica with its own data directory; replicas sharing a database share the token
/// secret file (`secret`), as every deployment of several replicas must.
fn replica(database: &str, data: &tempfile::TempDir, secret: &std::path::Path) -> common::Server {
    common::Server::spawn_with_env(
        &[
            "--no-tls",
            "--no-grpc",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--model",
            "smollm2-135m-instruct",
        ],
        &[
            ("DATABASE_URL", database),
            ("HELIXFLOW_TOKEN_SECRET_FILE", secret.to_str().unwrap()),
        ],
    )
}

/// A short completion; returns the status and, for a 200, the tokens its usage reports.
fn complete(url: &str, key: &str, max_tokens: u32) -> (u16, u64) {
    let body = serde_json::json!({
        "model": "smollm2-135m-instruct",
        "prompt": "Count: one, two, three,",
        "max_tokens": max_tokens,
        "ignore_eos": true,
    });
    let (status, answer) =
        common::http_as(url, "POST", "/v1/completions", &body.to_string(), Some(key));
    let tokens = if status == 200 {
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        answer["usage"]["total_tokens"].as_u64().unwrap()
    } else {
        assert_eq!(status, 429, "{answer}");
        0
    };
    (status, tokens)
}

/// Waits, if needed, so that the next few seconds stay inside one clock minute (the rate
/// limit windows are clock minutes).
fn away_from_a_minute_boundary() {
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if second > 40 {
        std::thread::sleep(Duration::from_secs(61 - second));
    }
}

#[test]
fn two_replicas_share_limits_budgets_and_revocations() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(database) = Database::create(&runtime) else {
        return;
    };
    let db = database.url.clone();
    let migrated = helixflow(&db, &["db", "migrate"]);
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let (_, admin) = key(&db, &["--name", "ops", "--scopes", "admin,inference"]);
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let secret = data_a.path().join("shared-token-secret");
    let a = replica(&db, &data_a, &secret);
    let b = replica(&db, &data_b, &secret);
    let urls = [a.url.clone(), b.url.clone()];
    // An admin key existed, so neither replica made one.
    assert!(!data_a.path().join("admin-key").exists());
    assert!(!data_b.path().join("admin-key").exists());

    // RPM 6 across both: of 12 requests alternating between the replicas, exactly 6 pass.
    let (_, limited) = key(&db, &["--name", "rpm", "--rpm", "6"]);
    away_from_a_minute_boundary();
    let statuses: Vec<u16> = (0..12)
        .map(|i| complete(&urls[i % 2], &limited, 1).0)
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        6,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 429).count(),
        6,
        "{statuses:?}"
    );

    // A budget of 400 tokens a day under 32 concurrent requests over both replicas: the
    // tokens used never pass it.
    let (_, budgeted) = key(
        &db,
        &["--name", "budget", "--budget", "400", "--period", "day"],
    );
    let requests: Vec<_> = (0..32)
        .map(|i| {
            let (url, key) = (urls[i % 2].clone(), budgeted.clone());
            std::thread::spawn(move || complete(&url, &key, 16))
        })
        .collect();
    let results: Vec<(u16, u64)> = requests.into_iter().map(|r| r.join().unwrap()).collect();
    let used: u64 = results.iter().map(|(_, tokens)| tokens).sum();
    let passed = results.iter().filter(|(s, _)| *s == 200).count();
    assert!(used <= 400, "{used} tokens used of a 400-token budget");
    assert!((1..32).contains(&passed), "{passed} of 32 passed");

    // Revoked through replica A: refused by B within a second.
    let (id, doomed) = key(&db, &["--name", "doomed"]);
    for url in &urls {
        assert_eq!(
            common::http_as(url, "GET", "/v1/models", "", Some(&doomed)).0,
            200
        );
    }
    let (status, body) = common::http_as(
        &urls[0],
        "DELETE",
        &format!("/v1/admin/keys/{id}"),
        "",
        Some(&admin),
    );
    assert_eq!(status, 200, "{body}");
    let revoked = Instant::now();
    assert_eq!(
        common::http_as(&urls[0], "GET", "/v1/models", "", Some(&doomed)).0,
        401
    );
    loop {
        if common::http_as(&urls[1], "GET", "/v1/models", "", Some(&doomed)).0 == 401 {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_millis(1500),
            "replica B still accepts a key revoked through A"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    assert!(a.stop().success());
    assert!(b.stop().success());
    database.drop_with(&runtime);
}

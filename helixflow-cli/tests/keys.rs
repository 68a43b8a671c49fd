//! `helixflow keys` and `helixflow db` against a SQLite store in a temporary data directory.

mod common;

use common::{cli as helixflow, ok};

use std::process::Command;

#[test]
fn keys_are_created_listed_and_revoked_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    ok(&helixflow(dir.path(), &["db", "migrate"]));
    assert!(dir.path().join("helixflow.db").exists());

    let created: serde_json::Value = serde_json::from_str(&ok(&helixflow(
        dir.path(),
        &[
            "keys",
            "create",
            "--name",
            "ci",
            "--scopes",
            "inference,admin",
            "--rpm",
            "60",
            "--budget",
            "1000",
            "--period",
            "day",
            "--models",
            "a,b",
            "--expires-in",
            "30d",
            "--json",
        ],
    )))
    .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));
    assert_eq!(created["scopes"], serde_json::json!(["inference", "admin"]));
    assert_eq!(created["limits"]["rpm"], 60);
    assert_eq!(created["models"], serde_json::json!(["a", "b"]));
    assert!(created["expires_at"].as_i64().unwrap() > created["created_at"].as_i64().unwrap());

    let listed = ok(&helixflow(dir.path(), &["keys", "list", "--json"]));
    assert!(listed.contains(&id));
    assert!(!listed.contains(key), "the secret is never listed");
    let table = ok(&helixflow(dir.path(), &["keys", "list"]));
    assert!(table.contains(&id) && table.contains("active"), "{table}");

    ok(&helixflow(dir.path(), &["keys", "revoke", &id]));
    let table = ok(&helixflow(dir.path(), &["keys", "list"]));
    assert!(table.contains("revoked"), "{table}");

    for bad in [
        &["keys", "revoke", "key_nope"][..],
        &["keys", "create", "--name", "x", "--scopes", "root"],
        &["keys", "create", "--name", "x", "--expires-in", "soon"],
        &["keys", "create", "--name", ""],
    ] {
        let out = helixflow(dir.path(), bad);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("error: ") && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}

#[test]
fn a_bad_database_setting_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_helixflow"))
        .args(["keys", "list", "--data-dir"])
        .arg(dir.path())
        .env("DATABASE_TYPE", "oracle")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("DATABASE_TYPE must be sqlite or postgres")
    );
}

#[test]
fn a_server_on_the_store_accepts_its_keys_until_they_are_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let created: serde_json::Value = serde_json::from_str(&ok(&helixflow(
        dir.path(),
        &["keys", "create", "--name", "e2e", "--json"],
    )))
    .unwrap();
    let (id, key) = (
        created["id"].as_str().unwrap(),
        created["key"].as_str().unwrap(),
    );
    let expiring: serde_json::Value = serde_json::from_str(&ok(&helixflow(
        dir.path(),
        &[
            "keys",
            "create",
            "--name",
            "brief",
            "--expires-in",
            "3s",
            "--json",
        ],
    )))
    .unwrap();
    let (brief, expires_at) = (
        expiring["key"].as_str().unwrap(),
        expiring["expires_at"].as_i64().unwrap(),
    );
    let server = common::Server::spawn_with_env(
        &[
            "--no-tls",
            "--data-dir",
            data,
            "--model",
            "smollm2-135m-instruct",
        ],
        // No database named: serve uses the default, helixflow.db in the data directory.
        &[],
    );
    assert!(dir.path().join("helixflow.db").exists());
    assert_eq!(
        common::http_as(&server.url, "GET", "/v1/models", "", None).0,
        401
    );
    assert_eq!(
        common::http_as(&server.url, "GET", "/v1/models", "", Some(key)).0,
        200
    );
    // A key that expires: accepted until then, refused from then on.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    if now() + 1 < expires_at {
        assert_eq!(
            common::http_as(&server.url, "GET", "/v1/models", "", Some(brief)).0,
            200
        );
    }
    while now() < expires_at {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        common::http_as(&server.url, "GET", "/v1/models", "", Some(brief)).0,
        401
    );
    // Revoked from the command line while the server runs: refused within a second or so.
    ok(&helixflow(dir.path(), &["keys", "revoke", id]));
    let revoked = std::time::Instant::now();
    while common::http_as(&server.url, "GET", "/v1/models", "", Some(key)).0 == 200 {
        assert!(
            revoked.elapsed().as_millis() < 1500,
            "the revoked key still works"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        common::http_as(&server.url, "GET", "/v1/models", "", Some(key)).0,
        401
    );
    assert!(server.stop().success());
}

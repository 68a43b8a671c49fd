//! `helixflow users` against a SQLite store named by `DATABASE_URL`, and a server on the same
//! store that accepts the users' logins and tokens until they are disabled.

mod common;

use common::ok;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

fn database_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("users.db").display())
}

/// Runs `helixflow ARGS --data-dir DIR` on the store in `dir`, with `stdin` as its input and
/// `env` added.
fn helixflow(dir: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_helixflow"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("DATABASE_URL", database_url(dir))
        .env_remove("DATABASE_TYPE")
        .env_remove("HELIXFLOW_USER_PASSWORD")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A data directory as the server makes one (0700), so that no warning about a loose one
/// comes before the errors these tests read.
fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    dir
}

fn fails(out: &Output, says: &str) {
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains(says) && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn users_are_created_listed_and_disabled_from_the_command_line() {
    let dir = private_dir();
    let path = dir.path();
    let stdin = format!("{PASSWORD}\n");
    let created: Value = serde_json::from_str(&ok(&helixflow(
        path,
        &[
            "users",
            "create",
            "--username",
            "alice",
            "--scopes",
            "inference,admin",
            "--password-stdin",
            "--json",
        ],
        &stdin,
        &[],
    )))
    .unwrap();
    assert!(created["id"].as_str().unwrap().starts_with("usr_"));
    assert_eq!(created["username"], "alice");
    assert_eq!(created["scopes"], json!(["inference", "admin"]));
    assert!(
        path.join("users.db").exists(),
        "DATABASE_URL names the store"
    );
    // The password from the environment instead; the id on standard output.
    let bob_id = ok(&helixflow(
        path,
        &["users", "create", "--username", "bob"],
        "",
        &[("HELIXFLOW_USER_PASSWORD", PASSWORD)],
    ));
    assert!(bob_id.trim().starts_with("usr_"), "{bob_id}");

    let listed: Value =
        serde_json::from_str(&ok(&helixflow(path, &["users", "list", "--json"], "", &[]))).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"alice") && names.contains(&"bob"));
    assert!(!listed.to_string().contains("argon2") && !listed.to_string().contains(PASSWORD));

    // Disable by username or by id.
    ok(&helixflow(path, &["users", "disable", "alice"], "", &[]));
    ok(&helixflow(
        path,
        &["users", "disable", bob_id.trim()],
        "",
        &[],
    ));
    let table = ok(&helixflow(path, &["users", "list"], "", &[]));
    assert_eq!(table.matches("disabled").count(), 2, "{table}");

    // Clear errors, and nothing stored.
    let create = |name: &'static str| ["users", "create", "--username", name, "--password-stdin"];
    fails(
        &helixflow(path, &["users", "create", "--username", "carol"], "", &[]),
        "--password-stdin",
    );
    fails(&helixflow(path, &create("carol"), "", &[]), "no password");
    fails(
        &helixflow(path, &create("carol"), "short\n", &[]),
        "password",
    );
    fails(&helixflow(path, &create("alice"), &stdin, &[]), "taken");
    fails(
        &helixflow(path, &create("x'; DROP TABLE users; --"), &stdin, &[]),
        "username",
    );
    fails(
        &helixflow(
            path,
            &["users", "create", "--username", "carol", "--scopes", "root"],
            "",
            &[("HELIXFLOW_USER_PASSWORD", PASSWORD)],
        ),
        "unknown scope",
    );
    fails(
        &helixflow(path, &["users", "disable", "usr_nope"], "", &[]),
        "no user",
    );
    let listed = ok(&helixflow(path, &["users", "list", "--json"], "", &[]));
    assert_eq!(
        serde_json::from_str::<Value>(&listed)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_server_on_the_store_accepts_logins_until_the_user_is_disabled() {
    let dir = private_dir();
    let path = dir.path();
    ok(&helixflow(
        path,
        &["users", "create", "--username", "dana", "--password-stdin"],
        PASSWORD,
        &[],
    ));
    let url = database_url(path);
    let server = common::Server::spawn_with_env(
        &[
            "--no-tls",
            "--data-dir",
            path.to_str().unwrap(),
            "--model",
            "smollm2-135m-instruct",
            "--token-lifetime-seconds",
            "120",
        ],
        &[("DATABASE_URL", &url)],
    );
    let login = json!({"username": "dana", "password": PASSWORD});
    let (code, body) = common::post_json(&server.url, "/v1/auth/login", &login);
    assert_eq!(code, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(body["expires_in"], 120, "--token-lifetime-seconds");
    assert_eq!(
        common::http_as(&server.url, "GET", "/v1/models", "", Some(token)).0,
        200
    );
    let wrong = json!({"username": "dana", "password": "wrong password"});
    assert_eq!(
        common::post_json(&server.url, "/v1/auth/login", &wrong).0,
        401
    );

    // Disabled from the command line while the server runs: refused within a second or so.
    ok(&helixflow(path, &["users", "disable", "dana"], "", &[]));
    let disabled = Instant::now();
    while common::http_as(&server.url, "GET", "/v1/models", "", Some(token)).0 == 200 {
        assert!(
            disabled.elapsed() < Duration::from_millis(1500),
            "a disabled user's token still works"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        common::http_as(&server.url, "GET", "/v1/models", "", Some(token)).0,
        401
    );
    assert_eq!(
        common::post_json(&server.url, "/v1/auth/login", &login).0,
        401
    );
    assert!(server.stop().success());
}

#[test]
fn an_out_of_range_token_lifetime_is_a_clear_error() {
    let dir = private_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_helixflow"))
        .args(["serve", "--no-tls", "--port", "0", "--no-grpc"])
        .args(["--token-lifetime-seconds", "0", "--data-dir"])
        .arg(dir.path())
        .env("DATABASE_URL", database_url(dir.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("serve started with a token lifetime of 0");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    fails(&out, "lifetime");
    assert!(
        !dir.path().join("users.db").exists(),
        "nothing is made before the settings are checked"
    );
}

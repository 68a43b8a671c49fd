//! Users over HTTP: login and logout, access tokens as bearer tokens on a second replica,
//! failed logins that all look alike and are rate limited, and the admin routes for users and
//! tokens refusing hostile input.

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use common::{call_as, engine, models};
use helixflow_core::platform::{Authenticator, Store, CACHE_TTL};
use helixflow_server::{router, AppState};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const OPERATOR: &str = "operator-key";
const PASSWORD: &str = "correct horse battery";

/// A replica: its own connection pool to the shared database.
async fn replica(url: &str) -> Router {
    let store = Store::connect(url)
        .await
        .unwrap()
        .with_token_secret(helixflow_core::platform::TokenSecret::from_bytes([7; 32]));
    let auth = Authenticator::new(Some(store), Some(OPERATOR.into()));
    router(AppState::new(models(engine(), false), None).with_auth(auth))
}

/// A migrated SQLite database in `dir`, and its URL.
async fn database(dir: &tempfile::TempDir) -> (Store, String) {
    let url = format!("sqlite://{}", dir.path().join("platform.db").display());
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_token_secret(helixflow_core::platform::TokenSecret::from_bytes([7; 32]));
    store.migrate().await.unwrap();
    (store, url)
}

/// Sends a request; the status, the headers and the body as JSON (`Null` if it is not).
async fn send(
    app: &Router,
    method: &str,
    path: &str,
    body: Option<String>,
    key: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = request
        .body(body.map_or(Body::empty(), Body::from))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

async fn create_user(app: &Router, username: &str, scopes: Value) -> Value {
    let body = json!({"username": username, "password": PASSWORD, "scopes": scopes});
    let (code, _, user) = send(
        app,
        "POST",
        "/v1/admin/users",
        Some(body.to_string()),
        Some(OPERATOR),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{user}");
    user
}

async fn login(app: &Router, username: &str, password: &str) -> (StatusCode, HeaderMap, Value) {
    let body = json!({"username": username, "password": password}).to_string();
    send(app, "POST", "/v1/auth/login", Some(body), None).await
}

async fn token(app: &Router, username: &str) -> String {
    let (code, _, body) = login(app, username, PASSWORD).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn access_tokens_work_as_bearer_tokens_until_logout() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, url) = database(&dir).await;
    let (a, b) = (replica(&url).await, replica(&url).await);
    let alice = create_user(&a, "alice", json!(["inference"])).await;
    assert_eq!(alice["username"], "alice");
    assert!(alice.get("password_hash").is_none() && alice.get("password").is_none());
    create_user(&a, "root", json!(["admin"])).await;

    let (code, _, body) = login(&a, "alice", PASSWORD).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 900);
    assert!(body["expires_at"].as_i64().unwrap() > 0);
    let alice_token = body["access_token"].as_str().unwrap().to_string();

    // The token works on the other replica; an inference user may not administer.
    let (code, _, models) = send(&b, "GET", "/v1/models", None, Some(&alice_token)).await;
    assert_eq!(code, StatusCode::OK, "{models}");
    let (code, _, error) = send(&b, "GET", "/v1/admin/users", None, Some(&alice_token)).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(error["error"]["code"], "permission_denied");
    // An admin-only user administers, but may not run inference.
    let root_token = token(&a, "root").await;
    let (code, _, users) = send(&b, "GET", "/v1/admin/users", None, Some(&root_token)).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(users["data"].as_array().unwrap().len(), 2);
    assert!(!users.to_string().contains("argon2"), "{users}");
    let (code, _, _) = send(&b, "GET", "/v1/models", None, Some(&root_token)).await;
    assert_eq!(code, StatusCode::FORBIDDEN);

    // Logout: refused at once here, within the cache window there, and twice is a 401.
    let (code, _, out) = send(&a, "POST", "/v1/auth/logout", None, Some(&alice_token)).await;
    assert_eq!(code, StatusCode::OK, "{out}");
    assert_eq!(out["revoked"], true);
    let (code, _, error) = send(&a, "GET", "/v1/models", None, Some(&alice_token)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(error["error"]["code"], "invalid_api_key");
    let revoked = Instant::now();
    while send(&b, "GET", "/v1/models", None, Some(&alice_token))
        .await
        .0
        != StatusCode::UNAUTHORIZED
    {
        assert!(
            revoked.elapsed() <= CACHE_TTL + Duration::from_millis(500),
            "the other replica still accepts a revoked token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, _, _) = send(&a, "POST", "/v1/auth/logout", None, Some(&alice_token)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    // Logout needs an access token: none is a 401, an API key a 400.
    let (code, _, _) = send(&a, "POST", "/v1/auth/logout", None, None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _, error) = send(&a, "POST", "/v1/auth/logout", None, Some(OPERATOR)).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{error}");

    // An admin revokes tokens by id or whole; disabling a user ends their tokens.
    let by_id = token(&a, "alice").await;
    let jti = {
        let (code, _, out) = send(&a, "POST", "/v1/auth/logout", None, Some(&root_token)).await;
        assert_eq!(code, StatusCode::OK);
        out["jti"].as_str().unwrap().to_string()
    };
    let (code, _, _) = send(&a, "GET", "/v1/admin/users", None, Some(&root_token)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "root logged out");
    let whole = token(&a, "alice").await;
    for body in [
        json!({"jti": jti}),
        json!({"token": by_id}),
        json!({"token": whole}),
    ] {
        let (code, _, out) = send(
            &a,
            "POST",
            "/v1/admin/tokens/revoke",
            Some(body.to_string()),
            Some(OPERATOR),
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{out}");
        assert_eq!(out["revoked"], true);
    }
    for revoked in [&by_id, &whole] {
        let (code, _, _) = send(&a, "GET", "/v1/models", None, Some(revoked)).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
    }
    let fresh = token(&a, "alice").await;
    let id = alice["id"].as_str().unwrap();
    let path = format!("/v1/admin/users/{id}/disable");
    let (code, _, out) = send(&a, "POST", &path, None, Some(OPERATOR)).await;
    assert_eq!(code, StatusCode::OK, "{out}");
    let (code, _, _) = send(&a, "GET", "/v1/models", None, Some(&fresh)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _, _) = login(&a, "alice", PASSWORD).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    // The operator key is untouched by all this.
    let (code, _, _) = send(&a, "GET", "/v1/models", None, Some(OPERATOR)).await;
    assert_eq!(code, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_look_alike_and_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = database(&dir).await;
    let (a, b) = (replica(&url).await, replica(&url).await);
    let bob = create_user(&a, "bob", json!(["inference"])).await;
    create_user(&a, "carol", json!(["inference"])).await;
    create_user(&a, "dave", json!(["inference"])).await;
    assert!(store
        .disable_user(dave_id(&store).await.as_str())
        .await
        .unwrap());

    // A wrong password, an unknown user and a disabled user get the same 401, and an unknown
    // user costs the same password check as a known one.
    let mut fastest = [Duration::MAX; 2];
    let mut bodies = Vec::new();
    for round in 0..3 {
        for (i, (username, password)) in [("bob", "wrong password"), ("nobody", PASSWORD)]
            .into_iter()
            .enumerate()
        {
            let started = Instant::now();
            let (code, headers, body) = login(&a, username, password).await;
            fastest[i] = fastest[i].min(started.elapsed());
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{username}: {body}");
            assert!(headers.get("retry-after").is_none());
            if round == 0 {
                bodies.push(body);
            }
        }
    }
    bodies.push(login(&a, "dave", PASSWORD).await.2);
    assert_eq!(bodies[0]["error"]["code"], "invalid_credentials");
    assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:?}");
    assert!(
        fastest[1] * 4 >= fastest[0],
        "an unknown user answers much faster than a wrong password: {fastest:?}"
    );

    // Ten failures a minute per username, counted across replicas: bob has had three.
    for i in 0..7 {
        let app = if i % 2 == 0 { &a } else { &b };
        let (code, _, _) = login(app, "bob", "wrong password").await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "failure {}", i + 4);
    }
    for app in [&a, &b] {
        let (code, headers, body) = login(app, "bob", PASSWORD).await;
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
    }
    // Others can still log in; bob's account itself is untouched.
    token(&b, "carol").await;
    let listed = store.get_user(bob["id"].as_str().unwrap()).await.unwrap();
    assert!(listed.unwrap().is_active());
}

async fn dave_id(store: &Store) -> String {
    store.get_user_by_name("dave").await.unwrap().unwrap().id
}

#[tokio::test(flavor = "multi_thread")]
async fn user_and_token_routes_refuse_hostile_input() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = database(&dir).await;
    let app = replica(&url).await;
    create_user(&app, "erin", json!(["inference"])).await;
    let erin_token = token(&app, "erin").await;
    let huge = "x".repeat(100_000);

    let hostile_users = [
        "{".to_string(),
        "null".into(),
        "[]".into(),
        String::new(),
        json!({"username": 5, "password": PASSWORD}).to_string(),
        json!({"username": "mallory"}).to_string(),
        json!({"username": "mallory", "password": PASSWORD, "is_admin": true}).to_string(),
        json!({"username": "mallory", "password": PASSWORD, "scopes": ["root"]}).to_string(),
        json!({"username": "mallory", "password": PASSWORD, "scopes": "admin"}).to_string(),
        json!({"username": "mallory", "password": PASSWORD, "scopes": []}).to_string(),
        json!({"username": "mallory", "password": "short"}).to_string(),
        json!({"username": "mallory", "password": huge}).to_string(),
        json!({"username": huge, "password": PASSWORD}).to_string(),
        json!({"username": "x'; DROP TABLE users; --", "password": PASSWORD}).to_string(),
        json!({"username": "' OR '1'='1", "password": PASSWORD}).to_string(),
        json!({"username": "nul\u{0}byte", "password": PASSWORD}).to_string(),
        json!({"username": "erin", "password": PASSWORD}).to_string(), // taken: 409
    ];
    for body in hostile_users {
        let (code, _, error) = send(
            &app,
            "POST",
            "/v1/admin/users",
            Some(body.clone()),
            Some(OPERATOR),
        )
        .await;
        assert!(code.is_client_error(), "{body:.60}: {code}");
        assert!(error["error"]["message"].is_string(), "{body:.60}: {error}");
    }

    let hostile_logins = [
        "{".to_string(),
        json!({"username": ["erin"], "password": PASSWORD}).to_string(),
        json!({"username": "erin", "password": 12345678}).to_string(),
        json!({"username": "erin", "password": PASSWORD, "otp": 1}).to_string(),
        json!({"username": "erin"}).to_string(),
        json!({"username": huge, "password": PASSWORD}).to_string(),
        json!({"username": "erin", "password": huge}).to_string(),
        json!({"username": "erin' --", "password": "' OR '1'='1"}).to_string(),
        json!({"username": "erin\u{0}", "password": PASSWORD}).to_string(),
    ];
    for body in hostile_logins {
        let (code, _, error) = send(&app, "POST", "/v1/auth/login", Some(body.clone()), None).await;
        assert!(
            code == StatusCode::BAD_REQUEST || code == StatusCode::UNAUTHORIZED,
            "{body:.60}: {code}"
        );
        assert!(error.get("access_token").is_none(), "{body:.60}");
    }

    let hostile_revocations = [
        "{".to_string(),
        json!({}).to_string(),
        json!({"jti": 5}).to_string(),
        json!({"jti": "a", "token": erin_token}).to_string(),
        json!({"jti": "x'; DELETE FROM revoked_tokens; --"}).to_string(),
        json!({"jti": huge}).to_string(),
        json!({"token": "not.a.token"}).to_string(),
        json!({"token": huge}).to_string(),
        json!({"jti": "a", "user": "erin"}).to_string(),
    ];
    for body in hostile_revocations {
        let (code, _, error) = send(
            &app,
            "POST",
            "/v1/admin/tokens/revoke",
            Some(body.clone()),
            Some(OPERATOR),
        )
        .await;
        assert!(code.is_client_error(), "{body:.60}: {code}");
        assert!(error["error"]["message"].is_string(), "{body:.60}: {error}");
    }
    for id in ["usr_nope", "x'%20OR%20'1'='1", "%00", &"u".repeat(5000)] {
        let path = format!("/v1/admin/users/{id}/disable");
        let (code, _, _) = send(&app, "POST", &path, None, Some(OPERATOR)).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{id:.40}");
    }
    // Inference callers may not use any of these.
    for (method, path) in [
        ("GET", "/v1/admin/users"),
        ("POST", "/v1/admin/users"),
        ("POST", "/v1/admin/tokens/revoke"),
    ] {
        let body = json!({"username": "mallory", "password": PASSWORD, "jti": "x"});
        let body = (method == "POST").then(|| body.to_string());
        let (code, _, _) = send(&app, method, path, body, Some(&erin_token)).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{method} {path}");
    }

    // Nothing was stored, disabled or revoked.
    let users = store.list_users().await.unwrap();
    assert_eq!(users.len(), 1, "{users:?}");
    assert!(users[0].is_active());
    let (code, _, _) = send(&app, "GET", "/v1/models", None, Some(&erin_token)).await;
    assert_eq!(code, StatusCode::OK);

    // Without a database, these routes say so.
    let bare = router(AppState::new(models(engine(), false), Some("k".into())));
    let login = json!({"username": "erin", "password": PASSWORD}).to_string();
    for (method, path, key, body) in [
        ("POST", "/v1/auth/login", None, Some(login)),
        ("GET", "/v1/admin/users", Some("k"), None),
    ] {
        let (code, bytes) = call_as(bare.clone(), method, path, body, key).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{path}");
        assert!(String::from_utf8_lossy(&bytes).contains("--no-database"));
    }
}

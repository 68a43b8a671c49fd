//! `/v1` authentication with keys from the platform's store: scopes, allowed models, the
//! operator key beside them, and revocation seen by a second replica within a second.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::Router;
use common::{call_as, engine, models, CHAT, EMBED};
use helixflow_core::platform::{Authenticator, NewKey, Scope, Store, CACHE_TTL};
use helixflow_server::{router, AppState};
use serde_json::{json, Value};

/// A replica: its own connection pool to the shared database.
async fn replica(url: &str) -> Router {
    let store = Store::connect(url)
        .await
        .unwrap()
        .with_token_secret(helixflow_core::platform::TokenSecret::from_bytes([7; 32]));
    let auth = Authenticator::new(Some(store), Some("operator-key".into()));
    router(AppState::new(models(engine(), true), None).with_auth(auth))
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_keys_carry_scopes_models_and_revocation_across_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("platform.db").display());
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_token_secret(helixflow_core::platform::TokenSecret::from_bytes([7; 32]));
    store.migrate().await.unwrap();
    let (a, b) = (replica(&url).await, replica(&url).await);

    let chat_only_key = store
        .create_key(NewKey {
            models: Some(vec![CHAT.into()]),
            ..NewKey::inference("chat only")
        })
        .await
        .unwrap();
    let chat_only = chat_only_key.secret.clone();
    let admin_only = store
        .create_key(NewKey {
            scopes: vec![Scope::Admin],
            ..NewKey::inference("admin only")
        })
        .await
        .unwrap()
        .secret;
    let chat = json!({"model": CHAT, "max_tokens": 2,
                      "messages": [{"role": "user", "content": "Hi"}]})
    .to_string();
    let embed = json!({"model": EMBED, "input": "Hi"}).to_string();

    let status = |app: &Router,
                  method: &'static str,
                  path: &'static str,
                  body: Option<&str>,
                  key: Option<&str>| {
        let (app, body, key) = (
            app.clone(),
            body.map(str::to_string),
            key.map(str::to_string),
        );
        async move { call_as(app, method, path, body, key.as_deref()).await }
    };
    // No key, a made-up key, and junk: 401 with OpenAI's error body.
    for key in [
        None,
        Some("hfk_AAAAAAAAAAAA_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        Some("' OR 1=1 --"),
    ] {
        let (code, body) = status(&a, "GET", "/v1/models", None, key).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{key:?}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key");
    }
    // The operator key still works, with every model.
    let (code, body) = status(&a, "GET", "/v1/models", None, Some("operator-key")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // A key limited to the chat model: chat yes, embeddings 403, and it lists only its model.
    let (code, body) = status(
        &a,
        "POST",
        "/v1/chat/completions",
        Some(&chat),
        Some(&chat_only),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (code, body) = status(&b, "POST", "/v1/embeddings", Some(&embed), Some(&chat_only)).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "permission_denied");
    assert_eq!(body["error"]["param"], "model");
    let (_, body) = status(&b, "GET", "/v1/models", None, Some(&chat_only)).await;
    let listed: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    // A key without the inference scope: 403.
    let (code, _) = status(
        &a,
        "POST",
        "/v1/chat/completions",
        Some(&chat),
        Some(&admin_only),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN);

    // Revoked through the store (as by another replica or the CLI): both replicas refuse it
    // within the cache window.
    assert!(store.revoke_key(&chat_only_key.key.id).await.unwrap());
    let revoked = Instant::now();
    for app in [&a, &b] {
        loop {
            let (code, _) = status(app, "GET", "/v1/models", None, Some(&chat_only)).await;
            if code == StatusCode::UNAUTHORIZED {
                break;
            }
            assert_eq!(code, StatusCode::OK);
            assert!(
                revoked.elapsed() <= CACHE_TTL + Duration::from_millis(500),
                "still accepted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Health stays open.
    let (code, _) = status(&a, "GET", "/health", None, None).await;
    assert_eq!(code, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_routes_manage_keys_and_refuse_hostile_input() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("platform.db").display());
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_token_secret(helixflow_core::platform::TokenSecret::from_bytes([7; 32]));
    store.migrate().await.unwrap();
    let app = replica(&url).await;
    let send = |method: &'static str, path: String, body: Option<String>, key: &str| {
        let (app, key) = (app.clone(), key.to_string());
        async move {
            let (code, bytes) = call_as(app, method, &path, body, Some(&key)).await;
            (
                code,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let admin = "operator-key";

    // Create: 201 with the secret, which then works for inference.
    let body = json!({"name": "made by admin", "scopes": ["inference"], "models": [CHAT],
                      "rpm": 10, "budget_tokens": 500, "budget_period": "day"});
    let (code, created) = send(
        "POST",
        "/v1/admin/keys".into(),
        Some(body.to_string()),
        admin,
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let (id, secret) = (
        created["id"].as_str().unwrap().to_string(),
        created["secret"].as_str().unwrap().to_string(),
    );
    assert_eq!(created["limits"]["budget_period"], "day");
    let (code, _) = send("GET", "/v1/models".into(), None, &secret).await;
    assert_eq!(code, StatusCode::OK);
    // An inference key may not administer.
    let (code, body) = send("GET", "/v1/admin/keys".into(), None, &secret).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");

    // Validate says what a credential is; the stats list the chat engine.
    let check = |credential: &str| json!({ "credential": credential }).to_string();
    let (code, info) = send(
        "POST",
        "/v1/admin/validate".into(),
        Some(check(&secret)),
        admin,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{info}");
    assert_eq!(info["valid"], true);
    assert_eq!(
        (info["kind"].as_str(), info["id"].as_str()),
        (Some("key"), Some(id.as_str()))
    );
    assert_eq!(info["scopes"], json!(["inference"]));
    assert_eq!(info["models"], json!([CHAT]));
    for junk in ["hfk_nope", "", "a\0b", &"x".repeat(100_000)] {
        let (code, info) = send(
            "POST",
            "/v1/admin/validate".into(),
            Some(check(junk)),
            admin,
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{info}");
        assert_eq!(info, json!({"valid": false, "scopes": []}));
    }
    let (code, _) = send(
        "POST",
        "/v1/admin/validate".into(),
        Some(r#"{"credential": 5}"#.into()),
        admin,
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = send(
        "POST",
        "/v1/admin/validate".into(),
        Some(check(admin)),
        &secret,
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (code, stats) = send("GET", "/v1/admin/stats".into(), None, admin).await;
    assert_eq!(code, StatusCode::OK, "{stats}");
    assert_eq!(stats["engines"][0]["model"], CHAT);
    assert!(stats["engines"][0]["kv_blocks_total"].as_u64().unwrap() > 0);
    assert!(stats["requests_total"].as_u64().unwrap() >= 1);

    // Hostile input: 4xx and nothing stored.
    let hostile = [
        "{".to_string(),
        json!({"name": 5}).to_string(),
        json!({"name": "x", "scopes": ["root"]}).to_string(),
        json!({"name": "x", "is_admin": true}).to_string(),
        json!({"name": "x".repeat(100_000)}).to_string(),
        json!({"name": "x", "rpm": -1}).to_string(),
        json!({"name": "x", "budget_tokens": 5}).to_string(),
        json!({"name": "x", "models": ["a,b"]}).to_string(),
        json!({"name": ""}).to_string(),
    ];
    for body in hostile {
        let (code, error) = send("POST", "/v1/admin/keys".into(), Some(body.clone()), admin).await;
        assert!(code.is_client_error(), "{body:.60}: {code}");
        assert!(error["error"]["message"].is_string(), "{error}");
    }
    let sql = "x'); DELETE FROM api_keys; --";
    let (code, _) = send(
        "POST",
        "/v1/admin/keys".into(),
        Some(json!({"name": sql}).to_string()),
        admin,
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, list) = send("GET", "/v1/admin/keys".into(), None, admin).await;
    assert_eq!(code, StatusCode::OK);
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&sql));
    assert!(
        !list.to_string().contains(&secret),
        "secrets are never listed"
    );

    // Revoke: refused by this server at once; an unknown id is a 404.
    let (code, _) = send("DELETE", format!("/v1/admin/keys/{id}"), None, admin).await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = send("GET", "/v1/models".into(), None, &secret).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _) = send("DELETE", "/v1/admin/keys/key_nope".into(), None, admin).await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // Without a database, the admin routes say so.
    let bare = router(AppState::new(models(engine(), false), Some("k".into())));
    let (code, bytes) = call_as(bare, "GET", "/v1/admin/keys", None, Some("k")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&bytes).contains("--no-database"));
}

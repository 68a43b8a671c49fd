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
    let store = Store::connect(url).await.unwrap();
    let auth = Authenticator::new(Some(store), Some("operator-key".into()));
    router(AppState::new(models(engine(), true), None).with_auth(auth))
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_keys_carry_scopes_models_and_revocation_across_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("platform.db").display());
    let store = Store::connect(&url).await.unwrap();
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

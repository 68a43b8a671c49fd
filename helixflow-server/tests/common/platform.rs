//! A server on a fresh SQLite platform store, metering its requests, and the request helpers
//! of the quota and usage tests.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use helixflow_core::completion::unix_now;
use helixflow_core::platform::{
    Authenticator, KeyLimits, Meter, NewKey, Store, UsageFilter, UsageRecord,
};
use helixflow_server::grpc::InferenceService;
use helixflow_server::{router, AppState};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{engine, models, CHAT};

pub const ADMIN: &str = "operator-key";

/// A server on a fresh SQLite store, metering its requests.
pub struct Platform {
    pub store: Store,
    pub meter: Meter,
    pub state: AppState,
    pub app: Router,
    _dir: tempfile::TempDir,
}

pub async fn platform() -> Platform {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("platform.db").display());
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_token_secret(helixflow_core::platform::TokenSecret::from_bytes([7; 32]));
    store.migrate().await.unwrap();
    let meter = Meter::start(store.clone());
    let state = AppState::new(models(engine(), true), None)
        .with_auth(Authenticator::new(Some(store.clone()), Some(ADMIN.into())))
        .with_meter(meter.clone());
    Platform {
        app: router(state.clone()),
        state,
        store,
        meter,
        _dir: dir,
    }
}

impl Platform {
    /// A key with exactly these limits: its id and secret.
    pub async fn key(&self, limits: KeyLimits) -> (String, String) {
        let created = self
            .store
            .create_key_exact(NewKey {
                limits,
                ..NewKey::inference("test")
            })
            .await
            .unwrap();
        (created.key.id, created.secret)
    }

    /// Every usage record of key `id`, stored first.
    pub async fn records(&self, id: &str) -> Vec<UsageRecord> {
        self.meter.recorder().unwrap().flush().await.unwrap();
        let filter = UsageFilter {
            key_id: Some(id.into()),
            ..UsageFilter::default()
        };
        self.store.usage_records(&filter, 1_000).await.unwrap()
    }

    /// The gRPC inference service over the same state.
    pub fn grpc(&self) -> InferenceService {
        InferenceService::new(Arc::new(OnceLock::from(self.state.clone())))
    }
}

/// Sends a request; the status, the headers and the body.
pub async fn send(
    app: &Router,
    method: &str,
    path: &str,
    body: Option<&Value>,
    key: &str,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, bytes.to_vec())
}

/// Sends a request with a JSON (or no) body and parses the JSON answer.
pub async fn send_json(
    app: &Router,
    method: &str,
    path: &str,
    body: Option<&Value>,
    key: &str,
) -> (StatusCode, HeaderMap, Value) {
    let (status, headers, bytes) = send(app, method, path, body, key).await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
    (status, headers, value)
}

/// The JSON payloads of an SSE body.
pub fn sse_payloads(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

/// Waits for a fresh minute when this one is nearly over, so that a test's requests share
/// one rate-limit window.
pub async fn early_in_a_minute() {
    let second = unix_now() % 60;
    if second >= 45 {
        tokio::time::sleep(Duration::from_secs(61 - second)).await;
    }
}

pub fn chat(max_tokens: u32) -> Value {
    json!({"model": CHAT, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": "Say hi"}]})
}

pub fn text_request(max_tokens: u32) -> Value {
    json!({"model": CHAT, "prompt": "Once upon a time", "max_tokens": max_tokens,
           "ignore_eos": true})
}

pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
        .to_str()
        .unwrap()
}

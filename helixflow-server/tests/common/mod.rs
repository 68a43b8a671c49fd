//! What the in-process server tests share: the default models, loaded once per test binary,
//! and a request helper.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod platform;

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use helixflow_core::chat_model::ChatModel;
use helixflow_core::embeddings::EmbeddingModel;
use helixflow_core::engine::{Engine, EngineConfig, EngineHandle};
use helixflow_core::registry::{ModelRegistry, ServedModel};
use helixflow_core::source::{self, ModelHome, ModelSpec, SilentProgress};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const CHAT: &str = "smollm2-135m-instruct";
pub const EMBED: &str = "all-minilm-l6-v2";

fn builtin(id: &str) -> std::path::PathBuf {
    let spec = ModelSpec::parse(id).unwrap();
    source::resolve(&spec, &ModelHome::from_env().unwrap(), &SilentProgress)
        .unwrap()
        .path
}

pub fn golden(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../helixflow-core/tests/fixtures/golden")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn engine() -> EngineHandle {
    static ENGINE: OnceLock<EngineHandle> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let chat = ChatModel::load_named(builtin(CHAT), CHAT).unwrap();
            Engine::start(Arc::new(chat), EngineConfig::default()).unwrap()
        })
        .clone()
}

pub fn embedder() -> Arc<EmbeddingModel> {
    static MODEL: OnceLock<Arc<EmbeddingModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            Arc::new(
                EmbeddingModel::load(&builtin(EMBED))
                    .unwrap()
                    .with_name(EMBED),
            )
        })
        .clone()
}

/// The served models: `engine`'s chat model, and the embedding model if `embeddings`.
pub fn models(engine: EngineHandle, embeddings: bool) -> ModelRegistry {
    let models = ModelRegistry::new();
    models.add(ServedModel::Chat(engine)).unwrap();
    if embeddings {
        models.add(ServedModel::Embedding(embedder())).unwrap();
    }
    models
}

/// Sends a request with an optional JSON body and bearer key; the status and the body.
pub async fn call_as(
    app: Router,
    method: &str,
    path: &str,
    body: Option<String>,
    key: Option<&str>,
) -> (StatusCode, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(path);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = request
        .body(body.map_or(Body::empty(), Body::from))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

/// Sends a request without a key.
pub async fn call(
    app: Router,
    method: &str,
    path: &str,
    body: Option<String>,
) -> (StatusCode, Vec<u8>) {
    call_as(app, method, path, body, None).await
}

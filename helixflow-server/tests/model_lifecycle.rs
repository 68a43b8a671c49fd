//! Models loaded and unloaded while serving, over HTTP: first use loads a model (concurrent
//! first requests share the load), `/v1/models` and `/v1/admin/models` say what is loaded and
//! what it takes, the admin routes load and unload, Ollama's `keep_alive` and `/api/ps`, and
//! a model that cannot fit beside busy ones is a 503 with `Retry-After`.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use helixflow_core::engine::{EngineConfig, KvBudget};
use helixflow_core::registry::{KeepAlive, ModelRegistry, RegistryConfig};
use helixflow_core::source::{self, ModelHome, ModelSpec, SilentProgress};
use helixflow_server::{router, AppState};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const KEY: &str = "sk-operator";
const KV_BYTES: usize = 8 << 20;

fn chat_gguf() -> std::path::PathBuf {
    let spec = ModelSpec::parse(common::CHAT).unwrap();
    source::resolve(&spec, &ModelHome::from_env().unwrap(), &SilentProgress)
        .unwrap()
        .path
}

/// A models folder with the default chat model as `a`, `b` and `c`.
fn models_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b", "c"] {
        std::os::unix::fs::symlink(chat_gguf(), dir.path().join(format!("{name}.gguf"))).unwrap();
    }
    dir
}

/// What one model takes in the registry's account.
fn footprint() -> u64 {
    std::fs::metadata(chat_gguf()).unwrap().len() + KV_BYTES as u64
}

/// The app over a registry that loads from `dir` within room for two models.
fn app(dir: &std::path::Path) -> (Router, ModelRegistry) {
    let registry = ModelRegistry::with_config(RegistryConfig {
        engine: EngineConfig {
            kv_budget: KvBudget::Bytes(KV_BYTES),
            ..EngineConfig::default()
        },
        models_dir: Some(dir.to_path_buf()),
        memory_budget: Some(2 * footprint() + footprint() / 2),
        keep_alive: KeepAlive::Forever,
        ..RegistryConfig::default()
    });
    let app = router(AppState::new(registry.clone(), Some(KEY.into())));
    (app, registry)
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value)
}

fn chat(model: &str, max_tokens: u32) -> Value {
    json!({"model": model, "max_tokens": max_tokens, "temperature": 0,
        "messages": [{"role": "user", "content": "Say hello."}]})
}

fn listed<'v>(list: &'v Value, id: &str) -> &'v Value {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not listed in {list}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn first_use_loads_once_and_the_listings_say_so() {
    let dir = models_dir();
    let (app, registry) = app(dir.path());
    let (status, _, list) = send(&app, "GET", "/v1/models", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed(&list, "a")["state"], "available");
    assert_eq!(listed(&list, "a")["memory_bytes"], 0);

    // Four first requests at once: one load, four answers.
    let requests = (0..4).map(|_| {
        let app = app.clone();
        tokio::spawn(
            async move { send(&app, "POST", "/v1/chat/completions", Some(chat("a", 4))).await },
        )
    });
    for request in requests {
        let (status, _, body) = request.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["model"], "a");
    }
    assert_eq!(registry.loads(), 1);
    let (_, _, model) = send(&app, "GET", "/v1/models/a", None).await;
    assert_eq!(model["state"], "loaded");
    assert_eq!(model["kind"], "chat");
    assert_eq!(model["memory_bytes"], footprint());
    assert_eq!(model["in_flight"], 0);
    assert!(model["last_used"].as_u64().unwrap() > 0);

    // Unknown ids, and paths, are 404s in OpenAI's shape.
    for id in ["nope", "../a", "/etc/passwd"] {
        let (status, _, body) = send(&app, "POST", "/v1/chat/completions", Some(chat(id, 4))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}: {body}");
        assert_eq!(body["error"]["code"], "model_not_found");
    }
    let (status, _, _) = send(&app, "GET", "/v1/models/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_routes_load_and_unload() {
    let dir = models_dir();
    let (app, registry) = app(dir.path());
    let (status, _, model) = send(
        &app,
        "POST",
        "/v1/admin/models/load",
        Some(json!({"model": "b", "keep_alive": "10m"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{model}");
    assert_eq!(model["state"], "loaded");
    let expires = model["expires_at"].as_u64().unwrap();
    let now = helixflow_core::completion::unix_now();
    assert!((now + 590..=now + 610).contains(&expires), "{model}");

    let (status, _, memory) = send(&app, "GET", "/v1/admin/models", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(memory["reserved_bytes"], footprint());
    assert_eq!(memory["budget_bytes"], 2 * footprint() + footprint() / 2);
    assert_eq!(listed(&memory, "b")["state"], "loaded");

    let (status, _, body) = send(
        &app,
        "POST",
        "/v1/admin/models/load",
        Some(json!({"model": "b", "keep_alive": "soon"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["param"], "keep_alive");
    let (status, _, body) = send(
        &app,
        "POST",
        "/v1/admin/models/load",
        Some(json!({"model": "zz"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (status, _, body) = send(
        &app,
        "POST",
        "/v1/admin/models/unload",
        Some(json!({"model": "b"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"id": "b", "unloaded": true, "in_flight": 0}));
    assert!(registry.status("b").is_none());
    let (status, _, _) = send(
        &app,
        "POST",
        "/v1/admin/models/unload",
        Some(json!({"model": "b"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Starts a long streamed answer on `model` and returns its unread response: the request
/// holds the model until the body is dropped.
async fn busy(app: &Router, model: &str) -> axum::response::Response {
    let body = json!({"model": model, "max_tokens": 50, "ignore_eos": true, "stream": true,
        "messages": [{"role": "user", "content": "Count."}]});
    let request = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response
}

#[tokio::test(flavor = "multi_thread")]
async fn no_room_beside_busy_models_is_a_503_with_retry_after() {
    let dir = models_dir();
    let (app, registry) = app(dir.path());
    let first = busy(&app, "a").await;
    let second = busy(&app, "b").await;
    assert_eq!(registry.status("a").unwrap().in_flight, 1);
    let (status, headers, body) =
        send(&app, "POST", "/v1/chat/completions", Some(chat("c", 4))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(body["error"]["type"], "server_error");
    assert!(registry.status("c").is_none());
    // The busy models kept serving.
    assert!(registry.status("a").is_some() && registry.status("b").is_some());
    drop(first);
    // The dropped stream lets go of `a`; then `c` takes its room.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, _, body) = send(&app, "POST", "/v1/chat/completions", Some(chat("c", 4))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(registry.status("a").is_none());
    assert_eq!(registry.status("b").unwrap().in_flight, 1);
    drop(second);
}

#[tokio::test(flavor = "multi_thread")]
async fn ollama_keep_alive_loads_unloads_and_shows_in_ps() {
    let dir = models_dir();
    let (app, registry) = app(dir.path());
    // An empty prompt loads the model; keep_alive sets how long it stays.
    let (status, _, body) = send(
        &app,
        "POST",
        "/api/generate",
        Some(json!({"model": "a", "prompt": "", "keep_alive": "5m"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["done_reason"], "load");
    let (_, _, ps) = send(&app, "GET", "/api/ps", None).await;
    let models = ps["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{ps}");
    assert_eq!(models[0]["name"], "a");
    assert_eq!(models[0]["size"], footprint());
    assert!(models[0]["expires_at"].as_str().unwrap().ends_with('Z'));
    // A chat with keep_alive 0 answers, then the model goes.
    let (status, _, body) = send(
        &app,
        "POST",
        "/api/chat",
        Some(json!({"model": "a", "stream": false, "keep_alive": 0,
            "messages": [{"role": "user", "content": "Hi"}], "options": {"num_predict": 3}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(registry.status("a").is_none());
    // No messages and keep_alive 0: unload (of a model not loaded: nothing to do).
    send(
        &app,
        "POST",
        "/api/chat",
        Some(json!({"model": "b", "messages": []})),
    )
    .await;
    assert!(registry.status("b").is_some());
    let (status, _, body) = send(
        &app,
        "POST",
        "/api/chat",
        Some(json!({"model": "b", "messages": [], "keep_alive": 0})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["done_reason"], "unload");
    assert!(registry.status("b").is_none());
    let (_, _, ps) = send(&app, "GET", "/api/ps", None).await;
    assert_eq!(ps["models"], json!([]));
    // /api/tags lists what could be loaded.
    let (_, _, tags) = send(&app, "GET", "/api/tags", None).await;
    assert!(tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "c"));
    // Pulling a model already at hand: status lines, then success (streamed or not).
    let request = Request::builder()
        .method("POST")
        .uri("/api/pull")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::from(json!({"model": "c"}).to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let lines: Vec<Value> = String::from_utf8_lossy(&bytes)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        lines.last().unwrap(),
        &json!({"status": "success"}),
        "{lines:?}"
    );
    let (status, _, body) = send(
        &app,
        "POST",
        "/api/pull",
        Some(json!({"model": "c", "stream": false})),
    )
    .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"status": "success"}))
    );
    let (status, _, body) = send(
        &app,
        "POST",
        "/api/pull",
        Some(json!({"model": "org/repo"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(registry.status("c").is_none(), "a pull does not load");
    // A bad keep_alive is refused in Ollama's shape.
    let (status, _, body) = send(
        &app,
        "POST",
        "/api/generate",
        Some(json!({"model": "a", "prompt": "", "keep_alive": "soon"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("keep_alive"));
}

//! Every route that runs a model, whatever API it speaks, goes the same way through the
//! platform: a key's limits refuse it (429 with `Retry-After`, in that API's error shape) and
//! each request it serves leaves a usage record naming its route. Responses are stored with
//! their owner's key, and no other key may read or continue them.

mod common;

use axum::http::StatusCode;
use common::platform::{chat, early_in_a_minute, header, platform, send, text_request};
use common::{CHAT, EMBED};
use helixflow_core::platform::KeyLimits;
use serde_json::{json, Value};

/// How an API words a refusal.
#[derive(Debug, Clone, Copy)]
enum Shape {
    OpenAi,
    Anthropic,
    Ollama,
}

fn routes() -> Vec<(&'static str, Value, Shape)> {
    let turn = json!([{"role": "user", "content": "Say hi"}]);
    vec![
        ("/v1/chat/completions", chat(2), Shape::OpenAi),
        ("/v1/completions", text_request(2), Shape::OpenAi),
        (
            "/v1/embeddings",
            json!({"model": EMBED, "input": "hi"}),
            Shape::OpenAi,
        ),
        (
            "/v1/responses",
            json!({"model": CHAT, "input": "Say hi", "max_output_tokens": 2}),
            Shape::OpenAi,
        ),
        (
            "/v1/messages",
            json!({"model": CHAT, "max_tokens": 2, "messages": turn}),
            Shape::Anthropic,
        ),
        (
            "/api/chat",
            json!({"model": CHAT, "messages": turn, "stream": false,
                "options": {"num_predict": 2}}),
            Shape::Ollama,
        ),
        (
            "/api/generate",
            json!({"model": CHAT, "prompt": "Say hi", "stream": false,
                "options": {"num_predict": 2}}),
            Shape::Ollama,
        ),
        (
            "/api/embed",
            json!({"model": EMBED, "input": "hi"}),
            Shape::Ollama,
        ),
        (
            "/api/embeddings",
            json!({"model": EMBED, "prompt": "hi"}),
            Shape::Ollama,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_and_usage_records_cover_every_route() {
    let p = platform().await;
    early_in_a_minute().await;
    for (route, body, shape) in routes() {
        let (id, key) = p
            .key(KeyLimits {
                rpm: Some(1),
                ..KeyLimits::default()
            })
            .await;
        let (status, _, bytes) = send(&p.app, "POST", route, Some(&body), &key).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{route}: {}",
            String::from_utf8_lossy(&bytes)
        );
        let (status, headers, bytes) = send(&p.app, "POST", route, Some(&body), &key).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{route}");
        assert!(header(&headers, "retry-after").parse::<u64>().unwrap() > 0);
        let refusal: Value = serde_json::from_slice(&bytes).unwrap();
        let shaped = match shape {
            Shape::OpenAi => refusal["error"]["code"] == "rate_limit_exceeded",
            Shape::Anthropic => {
                refusal["type"] == "error" && refusal["error"]["type"] == "rate_limit_error"
            }
            Shape::Ollama => refusal["error"].is_string(),
        };
        assert!(shaped, "{route}: {refusal}");
        let records = p.records(&id).await;
        assert_eq!(records.len(), 1, "{route}: {records:?}");
        assert_eq!(records[0].endpoint, route);
        assert_eq!(records[0].status, 200);
        assert!(records[0].prompt_tokens > 0, "{route}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_reads_and_continues_only_its_own_responses() {
    let p = platform().await;
    let (_, alice) = p.key(KeyLimits::default()).await;
    let (_, bob) = p.key(KeyLimits::default()).await;
    let ask = json!({"model": CHAT, "input": "My name is Alice.", "max_output_tokens": 4});
    let (status, _, bytes) = send(&p.app, "POST", "/v1/responses", Some(&ask), &alice).await;
    assert_eq!(status, StatusCode::OK);
    let made: Value = serde_json::from_slice(&bytes).unwrap();
    let id = made["id"].as_str().unwrap();
    let path = format!("/v1/responses/{id}");

    let (status, _, bytes) = send(&p.app, "GET", &path, None, &alice).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), made);
    let (status, _, bytes) = send(&p.app, "GET", &path, None, &bob).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let refusal: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(refusal["error"]["message"].as_str().unwrap().contains(id));

    let follow = json!({"model": CHAT, "input": "What is my name?", "max_output_tokens": 4,
        "previous_response_id": id});
    let (status, _, bytes) = send(&p.app, "POST", "/v1/responses", Some(&follow), &bob).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let refusal: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(refusal["error"]["param"], "previous_response_id");
    let (status, _, bytes) = send(&p.app, "POST", "/v1/responses", Some(&follow), &alice).await;
    assert_eq!(status, StatusCode::OK);
    let continued: Value = serde_json::from_slice(&bytes).unwrap();
    // The second prompt holds the first exchange.
    assert!(
        continued["usage"]["input_tokens"].as_u64().unwrap()
            > made["usage"]["input_tokens"].as_u64().unwrap() + 4
    );
    assert_eq!(continued["previous_response_id"], id);
}

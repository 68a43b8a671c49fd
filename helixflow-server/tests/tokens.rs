//! `/tokenize` and `/detokenize`: the ids a prompt or a conversation is to the model, and
//! back; bad input is a 400 in OpenAI's shape.

mod common;

use axum::http::StatusCode;
use common::{call, engine, models};
use helixflow_server::{router, AppState};
use serde_json::{json, Value};

const CHAT: &str = "smollm2-135m-instruct";

async fn post(path: &str, body: Value) -> (StatusCode, Value) {
    let app = router(AppState::new(models(engine(), false), None));
    let (status, bytes) = call(app, "POST", path, Some(body.to_string())).await;
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn prompts_and_conversations_tokenise_as_requests_do() {
    let model = engine().model().clone();
    let (status, body) = post("/tokenize", json!({"model": CHAT, "prompt": "The sky is"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<u32> = serde_json::from_value(body["tokens"].clone()).unwrap();
    assert_eq!(ids, model.encode_prompt("The sky is").unwrap());
    assert_eq!(body["count"], ids.len());
    assert_eq!(body["max_model_len"], model.context_length());

    let messages = json!([{"role": "user", "content": "Hi"}]);
    let (status, body) = post("/tokenize", json!({"model": CHAT, "messages": messages})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let chat_ids: Vec<u32> = serde_json::from_value(body["tokens"].clone()).unwrap();
    let expected = helixflow_core::chat_template::messages_from_openai(&messages).unwrap();
    assert_eq!(chat_ids, model.encode_chat(&expected).unwrap());

    let (status, body) = post("/detokenize", json!({"model": CHAT, "tokens": chat_ids})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["prompt"]
            .as_str()
            .unwrap()
            .contains("<|im_start|>user\nHi<|im_end|>"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_token_requests_are_refused() {
    for (path, body, want) in [
        ("/tokenize", json!({"model": CHAT}), StatusCode::BAD_REQUEST),
        (
            "/tokenize",
            json!({"model": CHAT, "prompt": "a", "messages": []}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/tokenize",
            json!({"model": CHAT, "prompt": "a", "extra": 1}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/tokenize",
            json!({"model": "nope", "prompt": "a"}),
            StatusCode::NOT_FOUND,
        ),
        (
            "/detokenize",
            json!({"model": CHAT, "tokens": [4_000_000]}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, response) = post(path, body.clone()).await;
        assert_eq!(status, want, "{path} {body}: {response}");
        assert!(response["error"]["message"].is_string(), "{response}");
    }
}

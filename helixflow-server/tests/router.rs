//! Every route of the HTTP application, driven in process (no socket) on the default models.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use common::{call, engine, golden, models, CHAT, EMBED};
use helixflow_core::engine::{Engine, EngineConfig};
use helixflow_server::{router, AppState};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

fn app() -> Router {
    router(AppState::new(models(engine(), true), None))
}

/// The sum of every series of metric `name` (labelled or not), if there is one.
fn metric(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.parse::<f64>().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

async fn post(path: &str, body: Value) -> (StatusCode, Value) {
    let (status, bytes) = call(app(), "POST", path, Some(body.to_string())).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The same request, streamed, with a final usage chunk.
fn streaming_with_usage(mut request: Value) -> Value {
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    request
}

/// The `data:` payloads of an SSE body.
fn sse_payloads(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
        .collect()
}

fn assert_openai_error(body: &Value) {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn greedy_chat_reproduces_the_reference_texts() {
    for case in golden("smollm2-chat.json")["cases"].as_array().unwrap() {
        let max = case["greedy_completion_token_ids"]
            .as_array()
            .unwrap()
            .len();
        let (status, body) = post(
            "/v1/chat/completions",
            json!({"model": CHAT, "messages": case["messages"], "temperature": 0, "max_tokens": max}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["object"], "chat.completion");
        assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(body["choices"][0]["message"]["role"], "assistant");
        assert_eq!(
            body["choices"][0]["message"]["content"],
            case["greedy_completion_text"]
        );
        let prompt_len = case["prompt_token_ids"].as_array().unwrap().len();
        assert_eq!(body["usage"]["prompt_tokens"], prompt_len);
        assert_eq!(body["usage"]["completion_tokens"], max);
        assert_eq!(body["usage"]["total_tokens"], prompt_len + max);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_chat_matches_the_whole_answer_and_ends_with_usage_and_done() {
    let request = json!({
        "model": CHAT, "temperature": 0, "max_tokens": 20,
        "messages": [{"role": "user", "content": "Name three primary colors."}],
    });
    let (_, whole) = post("/v1/chat/completions", request.clone()).await;
    let streamed = streaming_with_usage(request);
    let (status, body) = call(
        app(),
        "POST",
        "/v1/chat/completions",
        Some(streamed.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let payloads = sse_payloads(&body);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], whole["usage"]);
    let finish = &chunks[chunks.len() - 2]["choices"][0]["finish_reason"];
    assert_eq!(finish, &whole["choices"][0]["finish_reason"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn choices_seeds_logprobs_and_stop_strings() {
    let messages = json!([{"role": "user", "content": "Write a short poem about the sea."}]);
    let sampled = json!({"model": CHAT, "messages": messages, "n": 2, "seed": 42,
                         "temperature": 1.0, "max_tokens": 12, "logprobs": true, "top_logprobs": 3});
    let (status, first) = post("/v1/chat/completions", sampled.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (_, again) = post("/v1/chat/completions", sampled).await;
    assert_eq!(
        first["choices"], again["choices"],
        "the same seed gives the same choices"
    );
    assert_eq!(first["choices"].as_array().unwrap().len(), 2);
    let content = first["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert!(!content.is_empty());
    assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 3);

    let (_, plain) = post(
        "/v1/chat/completions",
        json!({"model": CHAT, "messages": messages, "temperature": 0, "max_tokens": 24}),
    )
    .await;
    let text = plain["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let word: String = text.split_whitespace().nth(2).unwrap().to_string();
    let (_, stopped) = post("/v1/chat/completions",
        json!({"model": CHAT, "messages": messages, "temperature": 0, "max_tokens": 24, "stop": word})).await;
    let cut = stopped["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    assert!(
        text.starts_with(cut) && !cut.contains(&word),
        "{cut:?} / {text:?}"
    );
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn text_completion_logprobs_have_the_legacy_shape_streamed_or_not() {
    let request = json!({"model": CHAT, "prompt": "Once upon a time", "max_tokens": 6,
                         "temperature": 0, "logprobs": 3});
    let (status, whole) = post("/v1/completions", request.clone()).await;
    assert_eq!(status, StatusCode::OK, "{whole}");
    let choice = &whole["choices"][0];
    let logprobs = &choice["logprobs"];
    let tokens: Vec<&str> = logprobs["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 6);
    assert_eq!(tokens.concat(), choice["text"].as_str().unwrap());
    let offsets: Vec<u64> = logprobs["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let mut expected = 0;
    for (token, offset) in tokens.iter().zip(&offsets) {
        assert_eq!(*offset, expected);
        expected += token.chars().count() as u64;
    }
    for (top, lp) in logprobs["top_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(logprobs["token_logprobs"].as_array().unwrap())
    {
        let top = top.as_object().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy: the chosen token is the most likely one.
        let best = top
            .values()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert!((best - lp.as_f64().unwrap()).abs() < 1e-6, "{top:?} {lp}");
    }
    assert!(choice["logprobs"].get("content").is_none());

    let mut streamed = request;
    streamed["stream"] = json!(true);
    let (status, body) = call(app(), "POST", "/v1/completions", Some(streamed.to_string())).await;
    assert_eq!(status, StatusCode::OK);
    let payloads = sse_payloads(&body);
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    let mut stream_logprobs =
        json!({"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []});
    for chunk in &chunks {
        let Some(lp) = chunk["choices"][0].get("logprobs").filter(|v| !v.is_null()) else {
            continue;
        };
        for key in ["tokens", "token_logprobs", "top_logprobs", "text_offset"] {
            let list = stream_logprobs[key].as_array_mut().unwrap();
            list.extend(lp[key].as_array().unwrap().iter().cloned());
        }
    }
    assert_eq!(&stream_logprobs, logprobs);
}

#[tokio::test(flavor = "multi_thread")]
async fn text_completions_take_strings_and_token_ids() {
    let (status, body) = post("/v1/completions",
        json!({"model": CHAT, "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "text_completion");
    let text = body["choices"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(body["usage"]["completion_tokens"], 5);
    let ids = engine()
        .model()
        .encode_prompt("The capital of France is")
        .unwrap();
    let (_, by_ids) = post(
        "/v1/completions",
        json!({"model": CHAT, "prompt": ids, "max_tokens": 5, "temperature": 0}),
    )
    .await;
    assert_eq!(by_ids["choices"][0]["text"], text);
    let (status, body) = call(
        app(),
        "POST",
        "/v1/completions",
        Some(
            json!({"model": CHAT,
        "prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "stream": true})
            .to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let payloads = sse_payloads(&body);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    assert!(payloads.len() >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_match_the_reference_as_floats_and_base64() {
    let cases = golden("minilm-embeddings.json")["cases"]
        .as_array()
        .unwrap()
        .clone();
    let inputs: Vec<&str> = cases.iter().map(|c| c["input"].as_str().unwrap()).collect();
    let (status, body) = post("/v1/embeddings", json!({"model": EMBED, "input": inputs})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "list");
    for (case, item) in cases.iter().zip(body["data"].as_array().unwrap()) {
        let want: Vec<f64> = case["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let got: Vec<f64> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let dot: f64 = want.iter().zip(&got).map(|(a, b)| a * b).sum();
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(dot / (norm(&want) * norm(&got)) >= 0.9999);
    }
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let (_, b64) = post(
        "/v1/embeddings",
        json!({"model": EMBED, "input": inputs[0], "encoding_format": "base64"}),
    )
    .await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let first: Vec<f32> = body["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(floats, first);
}

#[tokio::test(flavor = "multi_thread")]
async fn models_health_and_readiness() {
    let (status, body) = call(app(), "GET", "/v1/models", None).await;
    assert_eq!(status, StatusCode::OK);
    let list: Value = serde_json::from_slice(&body).unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [CHAT, EMBED]);
    let (status, body) = call(app(), "GET", &format!("/v1/models/{CHAT}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["object"],
        "model"
    );
    assert_eq!(call(app(), "GET", "/health", None).await.0, StatusCode::OK);
    assert_eq!(call(app(), "GET", "/ready", None).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_mistakes_get_openai_errors_with_the_right_status() {
    let messages = json!([{"role": "user", "content": "Hi"}]);
    let context = engine().model().context_length();
    for (path, body, want) in [
        (
            "/v1/chat/completions",
            "{not json".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-9", "messages": messages}).to_string(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/v1/chat/completions",
            json!({"model": CHAT, "messages": messages, "max_tokens": context + 1}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/chat/completions",
            json!({"model": CHAT, "messages": messages, "n": 0}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/chat/completions",
            json!({"model": CHAT, "messages": messages, "n": 100}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/chat/completions",
            json!({"model": CHAT, "messages": messages, "logprobs": true, "top_logprobs": 50})
                .to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/chat/completions",
            json!({"model": CHAT, "messages": messages, "temperature": 9}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/chat/completions",
            json!({"model": CHAT, "messages": "hello"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/completions",
            json!({"model": CHAT, "prompt": {"x": 1}}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/embeddings",
            json!({"model": EMBED, "input": []}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/embeddings",
            json!({"model": EMBED, "input": "x", "dimensions": 3}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/embeddings",
            json!({"model": CHAT, "input": "x"}).to_string(),
            StatusCode::NOT_FOUND,
        ),
        ("/v1/nothing", "{}".to_string(), StatusCode::NOT_FOUND),
    ] {
        let (status, bytes) = call(app(), "POST", path, Some(body.clone())).await;
        assert_eq!(
            status,
            want,
            "{path} {body}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert_openai_error(&serde_json::from_slice(&bytes).unwrap());
    }
    // Oversized bodies.
    let small = router(AppState::new(models(engine(), false), None).with_body_limit(64));
    let big = json!({"model": CHAT, "messages": [{"role": "user", "content": "x".repeat(200)}]});
    let (status, bytes) = call(small, "POST", "/v1/chat/completions", Some(big.to_string())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_openai_error(&serde_json::from_slice(&bytes).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_key_guards_v1_but_not_health() {
    let guarded = router(AppState::new(
        models(engine(), false),
        Some("s3cret".into()),
    ));
    let (status, bytes) = call(guarded.clone(), "GET", "/v1/models", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_openai_error(&serde_json::from_slice(&bytes).unwrap());
    let request = Request::builder()
        .uri("/v1/models")
        .header("authorization", "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        guarded.clone().oneshot(request).await.unwrap().status(),
        StatusCode::OK
    );
    let request = Request::builder()
        .uri("/v1/models")
        .header("authorization", "Bearer wrong")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        guarded.clone().oneshot(request).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(guarded, "GET", "/health", None).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_503_with_retry_after() {
    let chat = engine().model().clone();
    let busy = Engine::start(
        chat,
        EngineConfig {
            queue_capacity: 1,
            max_num_seqs: 1,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    let app = router(AppState::new(models(busy, false), None));
    let body = json!({"model": CHAT, "max_tokens": 16,
                      "messages": [{"role": "user", "content": "Tell me a story."}]})
    .to_string();
    let requests = (0..12).map(|_| {
        let (app, body) = (app.clone(), body.clone());
        tokio::spawn(async move {
            let request = Request::builder()
                .method("POST")
                .uri("/v1/chat/completions")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            let response = app.oneshot(request).await.unwrap();
            let retry = response.headers().get("retry-after").cloned();
            (response.status(), retry)
        })
    });
    let mut refused = 0;
    for handle in requests.collect::<Vec<_>>() {
        let (status, retry) = handle.await.unwrap();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(retry.is_some(), "503 without Retry-After");
            refused += 1;
        } else {
            assert_eq!(status, StatusCode::OK);
        }
    }
    assert!(refused > 0, "nothing was refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_stream_cancels_its_generation() {
    let chat = engine().model().clone();
    let own = Engine::start(chat, EngineConfig::default()).unwrap();
    let app = router(AppState::new(models(own.clone(), false), None));
    let body = json!({"model": CHAT, "max_tokens": 400, "stream": true,
                      "messages": [{"role": "user", "content": "Write a long story."}]});
    let request = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let mut body = response.into_body();
    // Read the first chunk, then hang up.
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some());
    drop(body);
    // The metrics endpoint shows the sequence gone and its blocks back.
    let metric = |text: &str, name: &str| {
        metric(text, name).unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    let start = std::time::Instant::now();
    loop {
        let (_, body) = call(app.clone(), "GET", "/metrics", None).await;
        let text = String::from_utf8(body).unwrap();
        if metric(&text, "helixflow_running_sequences") == 0.0
            && metric(&text, "helixflow_kv_blocks_used") == 0.0
        {
            assert!(
                metric(&text, "helixflow_cancelled_requests_total") >= 1.0,
                "{text}"
            );
            assert!(
                metric(&text, "helixflow_completion_tokens_total") < 400.0,
                "{text}"
            );
            break;
        }
        assert!(start.elapsed().as_secs() < 60, "not cancelled: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_tokens_and_latencies() {
    let app = app();
    let (status, _) = call(
        app.clone(),
        "POST",
        "/v1/chat/completions",
        Some(
            json!({
        "model": CHAT, "max_tokens": 4, "temperature": 0,
        "messages": [{"role": "user", "content": "Hi"}]})
            .to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(app, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("helixflow_requests_total{route=\"/v1/chat/completions\",status=\"200\"}"),
        "{text}"
    );
    for name in [
        "helixflow_time_to_first_token_seconds_count",
        "helixflow_inter_token_seconds_count",
        "helixflow_completion_tokens_total",
        "helixflow_prompt_tokens_total",
    ] {
        let value = metric(&text, name).unwrap_or_else(|| panic!("no {name}"));
        assert!(value >= 1.0, "{name} = {value}");
    }
    assert!(text.contains("# TYPE helixflow_kv_blocks_free gauge"));
    // Engine figures are labelled with the model they belong to.
    assert!(
        text.contains(&format!("helixflow_kv_blocks_free{{model=\"{CHAT}\"}} ")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_generation_past_the_timeout_is_cut_off_and_cancelled() {
    let chat = engine().model().clone();
    let own = Engine::start(chat, EngineConfig::default()).unwrap();
    let app = router(
        AppState::new(models(own.clone(), false), None)
            .with_request_timeout(std::time::Duration::from_millis(300)),
    );
    let long = json!({"model": CHAT, "max_tokens": 2000, "temperature": 0,
                      "messages": [{"role": "user", "content": "Write a very long story."}]});
    let (status, body) = call(
        app.clone(),
        "POST",
        "/v1/chat/completions",
        Some(long.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_openai_error(&serde_json::from_slice(&body).unwrap());
    let mut streamed = long;
    streamed["stream"] = json!(true);
    let (status, body) = call(
        app,
        "POST",
        "/v1/chat/completions",
        Some(streamed.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let payloads = sse_payloads(&body);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let error: Value = serde_json::from_str(&payloads[payloads.len() - 2]).unwrap();
    assert_openai_error(&error);
    let start = std::time::Instant::now();
    while own.stats().running_requests > 0 || own.stats().kv_blocks_used > 0 {
        assert!(start.elapsed().as_secs() < 60, "{:?}", own.stats());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(own.stats().tokens_generated < 2 * 2000);
}

#[tokio::test(flavor = "multi_thread")]
async fn ignore_eos_generates_exactly_max_tokens() {
    let mut request = json!({"model": CHAT, "temperature": 0, "max_tokens": 40,
        "messages": [{"role": "user", "content": "Reply with one word: yes or no?"}]});
    let (status, body) = post("/v1/chat/completions", request.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() < 40);
    request["ignore_eos"] = json!(true);
    let (status, body) = post("/v1/chat/completions", request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 40);
    let (status, body) = post(
        "/v1/completions",
        json!({"model": CHAT, "prompt": "Yes", "max_tokens": 40, "temperature": 0,
               "ignore_eos": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 40);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_every_route_and_resolves() {
    // Served without a key, like /health.
    let guarded = router(AppState::new(models(engine(), false), Some("k".into())));
    let (status, body) = call(guarded.clone(), "GET", "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let mut operations: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{method} {path}"))
        })
        .collect();
    operations.sort();
    assert_eq!(
        operations,
        [
            "delete /v1/admin/keys/{id}",
            "get /health",
            "get /metrics",
            "get /ready",
            "get /v1/admin/key-defaults",
            "get /v1/admin/keys",
            "get /v1/admin/models",
            "get /v1/admin/stats",
            "get /v1/admin/usage",
            "get /v1/admin/users",
            "get /v1/models",
            "get /v1/models/{id}",
            "get /v1/usage",
            "post /detokenize",
            "post /tokenize",
            "post /v1/admin/keys",
            "post /v1/admin/models/load",
            "post /v1/admin/models/unload",
            "post /v1/admin/tokens/revoke",
            "post /v1/admin/users",
            "post /v1/admin/users/{id}/disable",
            "post /v1/admin/validate",
            "post /v1/auth/login",
            "post /v1/auth/logout",
            "post /v1/chat/completions",
            "post /v1/completions",
            "post /v1/embeddings",
            "put /v1/admin/key-defaults",
        ]
    );
    // Every documented route exists: none of them falls through to the 404 fallback.
    for operation in &operations {
        let (method, path) = operation.split_once(' ').unwrap();
        let path = path.replace("{id}", CHAT);
        let (status, _) = call(guarded.clone(), &method.to_uppercase(), &path, None).await;
        assert!(
            status == StatusCode::OK
                || status == StatusCode::UNAUTHORIZED
                || status == StatusCode::BAD_REQUEST,
            "{operation}: {status}"
        );
    }
    // /v1 operations need the bearer key; the scheme is declared.
    let chat = &doc["paths"]["/v1/chat/completions"]["post"];
    assert_eq!(chat["security"][0]["api_key"], json!([]));
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"]
            .as_str()
            .map(str::to_lowercase),
        Some("bearer".into())
    );
    let content = &chat["responses"]["200"]["content"];
    assert!(
        content.get("application/json").is_some() && content.get("text/event-stream").is_some()
    );
    // Every schema reference resolves.
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 10, "{found:?}");
    for r in found {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} does not resolve"
        );
    }
    let completion = &doc["components"]["schemas"]["ChatCompletion"]["properties"];
    for field in [
        "id",
        "object",
        "created",
        "model",
        "choices",
        "usage",
        "system_fingerprint",
    ] {
        assert!(completion.get(field).is_some(), "ChatCompletion.{field}");
    }
    // The shared generation fields are one schema, which both completion requests include,
    // and the core's generation options one more, which it includes.
    let options = &doc["components"]["schemas"]["GenerationOptions"]["properties"];
    assert!(options.get("max_completion_tokens").is_some(), "{options}");
    let fields = doc["components"]["schemas"]["GenerationFields"].to_string();
    assert!(
        fields.contains("#/components/schemas/GenerationOptions"),
        "{fields}"
    );
    for request in ["ChatRequest", "CompletionRequest"] {
        let schema = doc["components"]["schemas"][request].to_string();
        assert!(
            schema.contains("#/components/schemas/GenerationFields"),
            "{schema}"
        );
    }
}

/// The wire shape of a JSON value, for snapshots: ids, times and the version fingerprint are
/// replaced by placeholders, floats by `"<float>"` (the values are tested elsewhere), long
/// vectors are cut to three entries and base64 strings to their length. Keys are sorted: the
/// order of an object's fields is not part of its wire format (and serde_json keeps it or not
/// depending on the features other crates ask of it).
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("id", Value::String(s)) if s.contains('-') => {
                            json!(format!("<{}-id>", s.split('-').next().unwrap()))
                        }
                        ("created" | "last_used", Value::Number(_)) => json!("<unix time>"),
                        ("system_fingerprint", Value::String(_)) => json!("<fingerprint>"),
                        ("embedding", Value::String(s)) => {
                            json!(format!("<base64, {} chars>", s.len()))
                        }
                        ("embedding", Value::Array(items)) => {
                            let mut cut: Vec<Value> = items.iter().take(3).map(shape).collect();
                            cut.push(json!(format!("... {} in all", items.len())));
                            Value::Array(cut)
                        }
                        _ => shape(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::Number(n) if n.is_f64() => json!("<float>"),
        other => other.clone(),
    }
}

/// Compares `actual` with `tests/snapshots/NAME`; `UPDATE_SNAPSHOTS=1` rewrites the file.
fn assert_snapshot(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_SNAPSHOTS=1 writes it)", path.display()));
    assert_eq!(
        actual, expected,
        "the wire format of {name} changed; if that is intended, rerun with UPDATE_SNAPSHOTS=1"
    );
}

/// A JSON response as a snapshot: the status and the body's shape.
async fn json_snapshot(name: &str, method: &str, path: &str, body: Option<Value>) {
    let (status, bytes) = call(app(), method, path, body.map(|b| b.to_string())).await;
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    let snapshot = shape(&json!({"body": body, "status": status.as_u16()}));
    let text = serde_json::to_string_pretty(&snapshot).unwrap();
    assert_snapshot(name, &(text + "\n"));
}

/// An SSE response as a snapshot: one line per event, each payload's shape.
async fn sse_snapshot(name: &str, path: &str, body: Value) {
    let (status, bytes) = call(app(), "POST", path, Some(body.to_string())).await;
    assert_eq!(status, StatusCode::OK);
    let mut text = String::new();
    for payload in sse_payloads(&bytes) {
        let line = match serde_json::from_str::<Value>(&payload) {
            Ok(value) => shape(&value).to_string(),
            Err(_) => payload, // [DONE]
        };
        text.push_str(&format!("data: {line}\n"));
    }
    assert_snapshot(name, &text);
}

#[tokio::test(flavor = "multi_thread")]
async fn wire_formats_match_their_snapshots() {
    let chat = json!({"model": CHAT, "temperature": 0, "max_tokens": 5, "logprobs": true,
                      "top_logprobs": 2,
                      "messages": [{"role": "user", "content": "Name three primary colors."}]});
    json_snapshot(
        "chat_completion.json",
        "POST",
        "/v1/chat/completions",
        Some(chat.clone()),
    )
    .await;
    let streamed = streaming_with_usage(chat);
    sse_snapshot(
        "chat_completion_stream.sse",
        "/v1/chat/completions",
        streamed,
    )
    .await;

    let text = json!({"model": CHAT, "prompt": "The capital of France is", "max_tokens": 4,
                      "temperature": 0, "logprobs": 2});
    json_snapshot(
        "text_completion.json",
        "POST",
        "/v1/completions",
        Some(text.clone()),
    )
    .await;
    let streamed = streaming_with_usage(text);
    sse_snapshot("text_completion_stream.sse", "/v1/completions", streamed).await;

    let inputs = json!(["The weather is lovely today.", "It's so sunny outside!"]);
    json_snapshot(
        "embeddings_float.json",
        "POST",
        "/v1/embeddings",
        Some(json!({"model": EMBED, "input": inputs})),
    )
    .await;
    json_snapshot(
        "embeddings_base64.json",
        "POST",
        "/v1/embeddings",
        Some(json!({"model": EMBED, "input": inputs, "encoding_format": "base64"})),
    )
    .await;
    json_snapshot("models.json", "GET", "/v1/models", None).await;
    json_snapshot("model.json", "GET", &format!("/v1/models/{CHAT}"), None).await;
    json_snapshot(
        "error_unknown_model.json",
        "POST",
        "/v1/chat/completions",
        Some(json!({"model": "nope", "messages": [{"role": "user", "content": "Hi"}]})),
    )
    .await;
    json_snapshot(
        "error_bad_parameter.json",
        "POST",
        "/v1/chat/completions",
        Some(json!({"model": CHAT, "n": 99, "messages": [{"role": "user", "content": "Hi"}]})),
    )
    .await;
}

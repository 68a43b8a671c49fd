//! Rate limits, budgets and usage records through the HTTP and gRPC APIs, on a SQLite store
//! with the real default models: 429s in OpenAI's shape with `Retry-After` and
//! `x-ratelimit-*` headers, budgets under concurrent requests, and usage rows that match what
//! the responses reported (streamed or not, cancelled or not).

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::platform::{
    chat, early_in_a_minute, header, platform, send, send_json, sse_payloads, text_request, ADMIN,
};
use common::{CHAT, EMBED};
use futures_util::StreamExt;
use helixflow_core::completion::unix_now;
use helixflow_core::platform::{BudgetPeriod, KeyLimits, CLIENT_CLOSED};
use helixflow_server::grpc::proto;
use helixflow_server::grpc::proto::inference_server::Inference;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread")]
async fn a_key_over_its_rpm_gets_429_with_retry_after_and_rate_limit_headers() {
    let p = platform().await;
    early_in_a_minute().await;
    let (id, key) = p
        .key(KeyLimits {
            rpm: Some(2),
            ..KeyLimits::default()
        })
        .await;
    let (status, headers, body) =
        send_json(&p.app, "POST", "/v1/chat/completions", Some(&chat(2)), &key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header(&headers, "x-ratelimit-limit-requests"), "2");
    assert_eq!(header(&headers, "x-ratelimit-remaining-requests"), "1");
    let reset = header(&headers, "x-ratelimit-reset-requests");
    // Within the minute: `1s` to `59s`, or `1m0s` at the minute's very first second.
    assert!(
        reset == "1m0s" || (reset.ends_with('s') && reset.len() <= 3),
        "{reset}"
    );
    assert!(
        headers.get("x-ratelimit-limit-tokens").is_none(),
        "no TPM limit"
    );
    assert_eq!(header(&headers, "x-request-id"), body["id"]);

    // A stream carries the headers too.
    let mut streamed = chat(2);
    streamed["stream"] = json!(true);
    let (status, headers, _) = send(
        &p.app,
        "POST",
        "/v1/chat/completions",
        Some(&streamed),
        &key,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "text/event-stream");
    assert_eq!(header(&headers, "x-ratelimit-remaining-requests"), "0");

    // The third request of the minute: 429 in OpenAI's shape.
    let (status, headers, body) =
        send_json(&p.app, "POST", "/v1/chat/completions", Some(&chat(2)), &key).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&headers, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(header(&headers, "x-ratelimit-remaining-requests"), "0");
    let error = &body["error"];
    assert_eq!(error["type"], "requests");
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(error["param"], Value::Null);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("Rate limit reached for requests"),
        "{message}"
    );
    // Other endpoints share the limit; the operator is never limited.
    let embed = json!({"model": EMBED, "input": "hi"});
    let (status, _, _) = send(&p.app, "POST", "/v1/embeddings", Some(&embed), &key).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, headers, _) = send(&p.app, "POST", "/v1/embeddings", Some(&embed), ADMIN).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("x-ratelimit-limit-requests").is_none());
    // Refused requests left no usage record: only the two admitted ones did.
    assert_eq!(p.records(&id).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_limits_and_budgets_refuse_over_http_and_grpc() {
    let p = platform().await;
    // A request that could never fit a TPM limit says to lower max_tokens.
    let (_, small) = p
        .key(KeyLimits {
            tpm: Some(50),
            ..KeyLimits::default()
        })
        .await;
    let (status, headers, body) = send_json(
        &p.app,
        "POST",
        "/v1/completions",
        Some(&text_request(100)),
        &small,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["type"], "tokens");
    assert_eq!(body["error"]["param"], "max_tokens");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("lower max_tokens"));
    assert_eq!(header(&headers, "x-ratelimit-limit-tokens"), "50");
    assert!(headers.get("retry-after").is_some());

    // A daily budget: requests pass until the next would go over it.
    let (_, budgeted) = p
        .key(KeyLimits {
            budget_tokens: Some(30),
            budget_period: Some(BudgetPeriod::Day),
            ..KeyLimits::default()
        })
        .await;
    let (status, headers, body) = send_json(
        &p.app,
        "POST",
        "/v1/completions",
        Some(&text_request(8)),
        &budgeted,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let used = body["usage"]["total_tokens"].as_u64().unwrap();
    assert_eq!(header(&headers, "x-ratelimit-limit-budget"), "30");
    let remaining: u64 = header(&headers, "x-ratelimit-remaining-budget")
        .parse()
        .unwrap();
    assert_eq!(remaining, 30 - used);
    let (status, _, _) = send(
        &p.app,
        "POST",
        "/v1/completions",
        Some(&text_request(8)),
        &budgeted,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, body) = send_json(
        &p.app,
        "POST",
        "/v1/completions",
        Some(&text_request(8)),
        &budgeted,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["type"], "insufficient_quota");
    assert_eq!(body["error"]["code"], "insufficient_quota");
    let retry: u64 = header(&headers, "retry-after").parse().unwrap();
    assert!((1..=86_400).contains(&retry));

    // gRPC: RESOURCE_EXHAUSTED with the same message.
    let mut request = tonic::Request::new(proto::CompletionRequest {
        model: CHAT.into(),
        prompt: Some(proto::completion_request::Prompt::Text(
            "Once upon a time".into(),
        )),
        options: Some(proto::GenerationOptions {
            max_tokens: Some(8),
            ..Default::default()
        }),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {budgeted}").parse().unwrap(),
    );
    let status = match p.grpc().complete(request).await {
        Err(status) => status,
        Ok(_) => panic!("the budget is spent"),
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("budget"), "{}", status.message());
    // The retry figures travel as metadata, as HTTP sends them as headers.
    let retry: u64 = status
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0);
    assert!(status.metadata().get("x-ratelimit-limit-budget").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_rows_match_what_the_responses_reported() {
    let p = platform().await;
    let (id, key) = p
        .key(KeyLimits {
            tpm: Some(1_000_000),
            ..KeyLimits::default()
        })
        .await;
    // (request id, endpoint, prompt tokens, completion tokens) as the responses said.
    let mut reported: Vec<(String, &str, u64, u64)> = Vec::new();
    let tokens = |usage: &Value| {
        (
            usage["prompt_tokens"].as_u64().unwrap(),
            usage["completion_tokens"].as_u64().unwrap_or(0),
        )
    };

    let (_, _, body) =
        send_json(&p.app, "POST", "/v1/chat/completions", Some(&chat(3)), &key).await;
    let (prompt, completion) = tokens(&body["usage"]);
    let chat_id = body["id"].as_str().unwrap().to_string();
    reported.push((chat_id, "/v1/chat/completions", prompt, completion));

    let mut streamed = chat(4);
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (_, _, bytes) = send(
        &p.app,
        "POST",
        "/v1/chat/completions",
        Some(&streamed),
        &key,
    )
    .await;
    let chunks = sse_payloads(&bytes);
    let (prompt, completion) = tokens(&chunks.last().unwrap()["usage"]);
    let stream_id = chunks[0]["id"].as_str().unwrap().to_string();
    reported.push((stream_id, "/v1/chat/completions", prompt, completion));

    let mut two = text_request(3);
    two["n"] = json!(2);
    let (_, _, body) = send_json(&p.app, "POST", "/v1/completions", Some(&two), &key).await;
    let (prompt, completion_tokens) = tokens(&body["usage"]);
    assert_eq!(completion_tokens, 6, "two choices of three tokens");
    let text_id = body["id"].as_str().unwrap().to_string();
    reported.push((text_id, "/v1/completions", prompt, completion_tokens));

    let mut text_stream = text_request(5);
    text_stream["stream"] = json!(true);
    text_stream["stream_options"] = json!({"include_usage": true});
    let (_, _, bytes) = send(&p.app, "POST", "/v1/completions", Some(&text_stream), &key).await;
    let chunks = sse_payloads(&bytes);
    let (prompt, completion_tokens) = tokens(&chunks.last().unwrap()["usage"]);
    let text_stream_id = chunks[0]["id"].as_str().unwrap().to_string();
    reported.push((text_stream_id, "/v1/completions", prompt, completion_tokens));

    let embed = json!({"model": EMBED, "input": ["The quick brown fox", "hello"]});
    let (status, headers, body) =
        send_json(&p.app, "POST", "/v1/embeddings", Some(&embed), &key).await;
    assert_eq!(status, StatusCode::OK);
    let embed_id = header(&headers, "x-request-id").to_string();
    let (prompt, _) = tokens(&body["usage"]);
    reported.push((embed_id, "/v1/embeddings", prompt, 0));

    // gRPC Chat: the usage of its `finished` event.
    let mut request = tonic::Request::new(proto::ChatRequest {
        model: CHAT.into(),
        messages: vec![proto::ChatMessage {
            role: "user".into(),
            content: "Say hi".into(),
            ..Default::default()
        }],
        options: Some(proto::GenerationOptions {
            max_tokens: Some(3),
            ..Default::default()
        }),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let mut events = p.grpc().chat(request).await.unwrap().into_inner();
    let (mut grpc_id, mut grpc_usage) = (String::new(), None);
    while let Some(event) = events.next().await {
        match event.unwrap().event.unwrap() {
            proto::generation_event::Event::Started(started) => grpc_id = started.id,
            proto::generation_event::Event::Finished(finished) => grpc_usage = finished.usage,
            proto::generation_event::Event::Token(_) | proto::generation_event::Event::Reply(_) => {
            }
        }
    }
    let usage = grpc_usage.unwrap();
    reported.push((
        grpc_id,
        "/helixflow.v1.Inference/Chat",
        u64::from(usage.prompt_tokens),
        u64::from(usage.completion_tokens),
    ));

    let records = p.records(&id).await;
    assert_eq!(records.len(), reported.len(), "{records:#?}");
    for (request_id, endpoint, prompt, completion) in reported {
        let record = records
            .iter()
            .find(|r| r.request_id.as_deref() == Some(request_id.as_str()))
            .unwrap_or_else(|| panic!("no usage row for {request_id}"));
        assert_eq!(record.endpoint, endpoint);
        assert_eq!(
            (record.prompt_tokens, record.completion_tokens),
            (prompt, completion),
            "{request_id}"
        );
        assert_eq!((record.status, record.cancelled), (200, false));
        assert_eq!(record.key_id.as_deref(), Some(id.as_str()));
        let model = if endpoint == "/v1/embeddings" {
            EMBED
        } else {
            CHAT
        };
        assert_eq!(record.model, model);
        // Generations know their time to first token; embeddings generate none.
        assert_eq!(record.ttft_ms.is_some(), completion > 0, "{record:?}");
        assert!(record.ttft_ms.unwrap_or(0) <= record.latency_ms);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_stream_is_charged_for_what_it_generated() {
    let p = platform().await;
    early_in_a_minute().await;
    let minute = unix_now() / 60;
    let (id, key) = p
        .key(KeyLimits {
            tpm: Some(5_000),
            ..KeyLimits::default()
        })
        .await;
    let mut streamed = text_request(400);
    streamed["stream"] = json!(true);
    let request = Request::builder()
        .method("POST")
        .uri("/v1/completions")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::from(streamed.to_string()))
        .unwrap();
    let response = p.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let remaining: u64 = header(response.headers(), "x-ratelimit-remaining-tokens")
        .parse()
        .unwrap();
    let mut body = response.into_body();
    let mut received = 0;
    while received < 3 {
        let frame = body.frame().await.unwrap().unwrap();
        if let Some(data) = frame.data_ref() {
            received += sse_payloads(data).len();
        }
    }
    drop(body); // the client goes away

    let dropped = std::time::Instant::now();
    let record = loop {
        let records = p.records(&id).await;
        if let Some(record) = records.into_iter().next() {
            break record;
        }
        // A liveness bound, not a speed check: the record comes when the drop is noticed.
        assert!(
            dropped.elapsed() < Duration::from_secs(60),
            "no usage record"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        record.cancelled && record.status == CLIENT_CLOSED,
        "{record:?}"
    );
    assert!(
        (received as u64..400).contains(&record.completion_tokens),
        "{record:?} after {received} chunks"
    );
    assert!(record.prompt_tokens > 0 && record.ttft_ms.is_some());

    // The reservation was settled to what was generated: the rest of the minute is back.
    p.meter.close(Duration::from_secs(30)).await.unwrap();
    let used = record.prompt_tokens + record.completion_tokens;
    assert_eq!(
        5_000 - remaining,
        record.prompt_tokens + 400,
        "the whole reservation"
    );
    let key = p.store.verify_key(&key).await.unwrap().unwrap();
    let now = unix_now();
    if now / 60 == minute {
        p.store
            .reserve(&key, 5_000 - used, now as i64)
            .await
            .unwrap();
        assert!(p.store.reserve(&key, 1, now as i64).await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_requests_never_spend_past_a_budget() {
    let p = platform().await;
    let (id, key) = p
        .key(KeyLimits {
            budget_tokens: Some(150),
            budget_period: Some(BudgetPeriod::Day),
            ..KeyLimits::default()
        })
        .await;
    let body = text_request(8);
    let answers = futures_util::future::join_all(
        (0..32).map(|_| send_json(&p.app, "POST", "/v1/completions", Some(&body), &key)),
    )
    .await;
    let mut spent = 0;
    let mut admitted = 0;
    for (status, _, answer) in &answers {
        match *status {
            StatusCode::OK => {
                admitted += 1;
                spent += answer["usage"]["total_tokens"].as_u64().unwrap();
            }
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(answer["error"]["type"], "insufficient_quota")
            }
            other => panic!("{other}: {answer}"),
        }
    }
    // Each request reserves exactly what it uses (ignore_eos): as many as fit are admitted.
    let per_request = spent / admitted;
    assert!(spent <= 150, "spent {spent} of a budget of 150");
    assert_eq!(admitted, 150 / per_request, "{admitted} admitted");
    let records = p.records(&id).await;
    assert_eq!(records.len() as u64, admitted);
    let recorded: u64 = records
        .iter()
        .map(|r| r.prompt_tokens + r.completion_tokens)
        .sum();
    assert_eq!(recorded, spent);
}

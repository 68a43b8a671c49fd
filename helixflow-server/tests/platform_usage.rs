//! The usage and limit routes on a SQLite store: `/v1/usage` (the caller's own usage),
//! `/v1/admin/usage` (reports by key, model and day) and `/v1/admin/key-defaults` (the limits
//! new keys get); hostile input gets 4xx and changes nothing.

mod common;

use axum::http::StatusCode;
use common::platform::{chat, header, platform, send, send_json, ADMIN};
use common::CHAT;
use helixflow_core::completion::unix_now;
use helixflow_core::platform::KeyLimits;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn usage_routes_report_and_refuse_hostile_input() {
    let p = platform().await;
    let (id_a, key_a) = p.key(KeyLimits::default()).await;
    let (id_b, key_b) = p.key(KeyLimits::default()).await;
    let mut spent = (0, 0);
    for _ in 0..2 {
        let (_, _, body) = send_json(
            &p.app,
            "POST",
            "/v1/chat/completions",
            Some(&chat(2)),
            &key_a,
        )
        .await;
        spent.0 += body["usage"]["prompt_tokens"].as_u64().unwrap();
        spent.1 += body["usage"]["completion_tokens"].as_u64().unwrap();
    }
    send(
        &p.app,
        "POST",
        "/v1/chat/completions",
        Some(&chat(2)),
        &key_b,
    )
    .await;
    p.meter.recorder().unwrap().flush().await.unwrap();

    // Each key sees its own usage, by day and model.
    let (status, _, page) = send_json(&p.app, "GET", "/v1/usage", None, &key_a).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["object"], "page");
    let bucket = &page["data"][0];
    let today = unix_now() as i64 / 86_400 * 86_400;
    assert_eq!(bucket["start_time"], today);
    assert_eq!(bucket["end_time"], today + 86_400);
    let result = &bucket["results"][0];
    assert_eq!(result["model"], CHAT);
    assert_eq!(result["num_model_requests"], 2);
    assert_eq!(result["input_tokens"], spent.0);
    assert_eq!(result["output_tokens"], spent.1);
    let (_, _, page) = send_json(&p.app, "GET", "/v1/usage", None, &key_b).await;
    assert_eq!(page["data"][0]["results"][0]["num_model_requests"], 1);
    let later = format!("/v1/usage?start_time={}", unix_now() + 3_600);
    let (_, _, page) = send_json(&p.app, "GET", &later, None, &key_b).await;
    assert_eq!(page["data"], json!([]));

    // The admin report by key, and by model and day.
    let (status, _, report) = send_json(&p.app, "GET", "/v1/admin/usage", None, ADMIN).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["group_by"], json!(["key"]));
    let rows = report["data"].as_array().unwrap();
    let requests = |id: &str| {
        rows.iter()
            .find(|r| r["api_key_id"] == id)
            .map(|r| r["num_model_requests"].clone())
    };
    assert_eq!(requests(&id_a), Some(json!(2)));
    assert_eq!(requests(&id_b), Some(json!(1)));
    let path = "/v1/admin/usage?group_by=model,day&start_time=0";
    let (_, _, report) = send_json(&p.app, "GET", path, None, ADMIN).await;
    let rows = report["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["model"], CHAT);
    assert_eq!(rows[0]["start_time"], today);
    assert_eq!(rows[0]["num_model_requests"], 3);
    let path = format!("/v1/admin/usage?key_id={id_b}");
    let (_, _, report) = send_json(&p.app, "GET", &path, None, ADMIN).await;
    assert_eq!(report["data"].as_array().unwrap().len(), 1);

    // Hostile or malformed parameters: 400 in OpenAI's shape; an inference key may not read
    // the admin report.
    for path in [
        "/v1/admin/usage?group_by=key;DROP%20TABLE%20usage_records",
        "/v1/admin/usage?group_by=",
        "/v1/admin/usage?start_time=-5",
        "/v1/admin/usage?start_time=abc",
        "/v1/admin/usage?start_time=99999999999999999999999",
        "/v1/admin/usage?start_time=10&end_time=5",
        "/v1/admin/usage?bogus=1",
        "/v1/usage?group_by=key",
        "/v1/usage?end_time=-1",
    ] {
        let (status, _, body) = send_json(&p.app, "GET", path, None, ADMIN).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    let long = format!("/v1/admin/usage?key_id={}", "x".repeat(500));
    for path in [
        &long,
        "/v1/admin/usage?key_id=key_%00",
        "/v1/admin/usage?key_id=a'%20OR%201=1",
    ] {
        let (status, _, _) = send(&p.app, "GET", path, None, ADMIN).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
    }
    let (status, _, _) = send(&p.app, "GET", "/v1/admin/usage", None, &key_a).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Nothing was changed by any of it.
    let (_, _, report) =
        send_json(&p.app, "GET", "/v1/admin/usage?group_by=day", None, ADMIN).await;
    assert_eq!(report["data"][0]["num_model_requests"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn default_limits_apply_to_new_keys_and_refuse_hostile_input() {
    let p = platform().await;
    let (status, _, defaults) =
        send_json(&p.app, "GET", "/v1/admin/key-defaults", None, ADMIN).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        defaults,
        json!({"rpm": null, "tpm": null, "budget_tokens": null,
                                "budget_period": null})
    );
    let wanted = json!({"rpm": 60, "tpm": 10000, "budget_tokens": 1000000,
                        "budget_period": "month"});
    let (status, _, set) = send_json(
        &p.app,
        "PUT",
        "/v1/admin/key-defaults",
        Some(&wanted),
        ADMIN,
    )
    .await;
    assert_eq!((status, &set), (StatusCode::OK, &wanted));

    for hostile in [
        json!({"rpm": -1}),
        json!({"rpm": "60"}),
        json!({"rpm": 1e30}),
        json!({"budget_tokens": 5}),
        json!({"budget_period": "week", "budget_tokens": 5}),
        json!({"rpm": 1, "is_admin": true}),
        json!([1, 2]),
    ] {
        let (status, _, body) = send_json(
            &p.app,
            "PUT",
            "/v1/admin/key-defaults",
            Some(&hostile),
            ADMIN,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{hostile}: {body}");
    }
    let (_, key_a) = p.key(KeyLimits::default()).await;
    let (status, _, _) = send(
        &p.app,
        "PUT",
        "/v1/admin/key-defaults",
        Some(&json!({})),
        &key_a,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, _, unchanged) = send_json(&p.app, "GET", "/v1/admin/key-defaults", None, ADMIN).await;
    assert_eq!(unchanged, wanted);

    // New keys take the defaults for what they leave unset, unless unlimited.
    let make = |body: Value| {
        let app = p.app.clone();
        async move { send_json(&app, "POST", "/v1/admin/keys", Some(&body), ADMIN).await }
    };
    let (status, _, plain) = make(json!({"name": "plain"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(plain["limits"], wanted);
    let (_, _, own) = make(json!({"name": "own", "rpm": 5})).await;
    assert_eq!(own["limits"]["rpm"], 5);
    assert_eq!(own["limits"]["tpm"], 10000);
    let (_, _, free) = make(json!({"name": "free", "unlimited": true})).await;
    assert_eq!(free["limits"]["rpm"], Value::Null);
    assert_eq!(free["limits"]["budget_tokens"], Value::Null);
    let (status, _, _) = make(json!({"name": "both", "unlimited": true, "rpm": 5})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A key made with the defaults is limited by them at once.
    let secret = plain["secret"].as_str().unwrap();
    let (status, headers, _) = send(
        &p.app,
        "POST",
        "/v1/chat/completions",
        Some(&chat(2)),
        secret,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "x-ratelimit-limit-requests"), "60");
    assert_eq!(header(&headers, "x-ratelimit-limit-tokens"), "10000");
    assert_eq!(header(&headers, "x-ratelimit-limit-budget"), "1000000");
}

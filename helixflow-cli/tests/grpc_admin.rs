//! The gRPC administration services (`Auth`, `Monitoring`) of a server on its default
//! platform database (SQLite in the data directory), called with the bootstrap admin key.

mod common;

use common::with_key;
use helixflow_server::grpc::proto::auth_client::AuthClient;
use helixflow_server::grpc::proto::monitoring_client::MonitoringClient;
use helixflow_server::grpc::proto::{
    revoke_token_request, CreateKeyRequest, GetStatsRequest, GetUsageRequest, Limits,
    ListKeysRequest, RevokeKeyRequest, RevokeTokenRequest, ValidateRequest, WatchStatsRequest,
};
use tonic::transport::Channel;
use tonic::{Code, Request};

fn validate(credential: &str) -> ValidateRequest {
    ValidateRequest {
        credential: credential.into(),
    }
}

#[test]
fn admin_services_manage_keys_and_tokens_and_report_stats_and_usage() {
    let data = tempfile::tempdir().unwrap();
    let server = common::Server::spawn_with_env(
        &[
            "--no-tls",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--model",
            "smollm2-135m-instruct",
        ],
        &[],
    );
    let admin = std::fs::read_to_string(data.path().join("admin-key")).unwrap();
    let admin = admin.trim();
    let grpc = server.grpc.clone().unwrap();
    let url = server.url.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let channel = Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut auth = AuthClient::new(channel.clone());
        let mut monitoring = MonitoringClient::new(channel);

        // No key: UNAUTHENTICATED; an inference key: PERMISSION_DENIED.
        let refused = auth
            .list_keys(Request::new(ListKeysRequest {}))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
        let created = auth
            .create_key(with_key(
                CreateKeyRequest {
                    name: "grpc".into(),
                    models: vec!["smollm2-135m-instruct".into()],
                    limits: Some(Limits {
                        rpm: Some(100),
                        budget_tokens: Some(10_000),
                        budget_period: Some("day".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                admin,
            ))
            .await
            .unwrap()
            .into_inner();
        let key = created.key.unwrap();
        assert_eq!(key.scopes, ["inference"]);
        assert_eq!(key.limits.unwrap().rpm, Some(100));
        let denied = monitoring
            .get_stats(with_key(GetStatsRequest {}, &created.secret))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);

        // Bad input is INVALID_ARGUMENT and stores nothing.
        for bad in [
            CreateKeyRequest {
                name: String::new(),
                ..Default::default()
            },
            CreateKeyRequest {
                name: "x".into(),
                scopes: vec!["root'; DROP TABLE api_keys; --".into()],
                ..Default::default()
            },
            CreateKeyRequest {
                name: "y".repeat(100_000),
                ..Default::default()
            },
        ] {
            let status = auth.create_key(with_key(bad, admin)).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        }
        let keys = auth
            .list_keys(with_key(ListKeysRequest {}, admin))
            .await
            .unwrap()
            .into_inner()
            .keys;
        assert_eq!(keys.len(), 2, "the bootstrap key and the new one");

        // Validate says what a credential is.
        let valid = auth
            .validate(with_key(validate(&created.secret), admin))
            .await
            .unwrap()
            .into_inner();
        assert!(valid.valid);
        assert_eq!(
            (valid.kind.as_str(), valid.id.as_str()),
            ("key", key.id.as_str())
        );
        assert_eq!(valid.models, ["smollm2-135m-instruct"]);
        let junk = auth
            .validate(with_key(validate("hfk_nope"), admin))
            .await
            .unwrap()
            .into_inner();
        assert!(!junk.valid);

        // One generation, then the stats and usage show it.
        let body = serde_json::json!({
            "model": "smollm2-135m-instruct", "prompt": "Hello", "max_tokens": 4,
        });
        let (status, _) = common::http_as(
            &url,
            "POST",
            "/v1/completions",
            &body.to_string(),
            Some(&created.secret),
        );
        assert_eq!(status, 200);
        let stats = monitoring
            .get_stats(with_key(GetStatsRequest {}, admin))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stats.engines.len(), 1);
        assert_eq!(stats.engines[0].model, "smollm2-135m-instruct");
        assert!(stats.engines[0].tokens_generated >= 4);
        assert!(stats.completion_tokens_total >= 4 && stats.requests_total >= 1);
        let mut feed = monitoring
            .watch_stats(with_key(WatchStatsRequest { interval_ms: 100 }, admin))
            .await
            .unwrap()
            .into_inner();
        let first = feed.message().await.unwrap().unwrap();
        let second = feed.message().await.unwrap().unwrap();
        assert!(second.timestamp_ms >= first.timestamp_ms + 90);
        drop(feed);

        // Usage records are written within a second.
        let mut usage = Vec::new();
        for _ in 0..30 {
            usage = monitoring
                .get_usage(with_key(
                    GetUsageRequest {
                        group_by: "key".into(),
                        ..Default::default()
                    },
                    admin,
                ))
                .await
                .unwrap()
                .into_inner()
                .groups;
            if !usage.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let row = usage
            .iter()
            .find(|g| g.group == key.id)
            .expect("the key's usage");
        assert_eq!((row.requests, row.completion_tokens), (1, 4));
        let bad_group = monitoring
            .get_usage(with_key(
                GetUsageRequest {
                    group_by: "owner; --".into(),
                    ..Default::default()
                },
                admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(bad_group.code(), Code::InvalidArgument);

        // Revoking through gRPC: refused by this server at once.
        auth.revoke_key(with_key(RevokeKeyRequest { id: key.id.clone() }, admin))
            .await
            .unwrap();
        let revoked = auth
            .validate(with_key(validate(&created.secret), admin))
            .await
            .unwrap()
            .into_inner();
        assert!(!revoked.valid);
        let missing = auth
            .revoke_key(with_key(
                RevokeKeyRequest {
                    id: "key_nope".into(),
                },
                admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);

        // A user's access token, revoked through gRPC.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_helixflow"))
            .args(["users", "create", "--username", "ana", "--password-stdin"])
            .arg("--data-dir")
            .arg(data.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(b"correct horse battery\n")?;
                child.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let login = serde_json::json!({"username": "ana", "password": "correct horse battery"});
        let (status, body) =
            common::http_as(&url, "POST", "/v1/auth/login", &login.to_string(), None);
        assert_eq!(status, 200, "{body}");
        let token: serde_json::Value = serde_json::from_str(&body).unwrap();
        let token = token["access_token"].as_str().unwrap().to_string();
        let user = auth
            .validate(with_key(validate(&token), admin))
            .await
            .unwrap()
            .into_inner();
        assert!(user.valid && user.kind == "user" && user.expires_at.is_some());
        let target = Some(revoke_token_request::Target::Token(token.clone()));
        let revoked = auth
            .revoke_token(with_key(RevokeTokenRequest { target }, admin))
            .await
            .unwrap()
            .into_inner();
        assert!(revoked.revoked && !revoked.jti.is_empty());
        let after = auth
            .validate(with_key(validate(&token), admin))
            .await
            .unwrap()
            .into_inner();
        assert!(!after.valid);
    });
    assert!(server.stop().success());
}

/// SIGTERM while a stats feed is open and a long generation streams over gRPC: the feed ends
/// at once, the generation is cut off at the end of the grace period, the server exits 0, and
/// the cut generation has its usage record, marked cancelled and charged for what it made.
#[test]
fn sigterm_ends_stats_feeds_and_cuts_long_generations_with_their_usage() {
    use helixflow_server::grpc::proto::inference_client::InferenceClient;
    use helixflow_server::grpc::proto::{ChatMessage, ChatRequest, GenerationOptions};

    let data = tempfile::tempdir().unwrap();
    let mut server = common::Server::spawn_with_env(
        &[
            "--no-tls",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--model",
            "smollm2-135m-instruct",
            "--grace-seconds",
            "1",
        ],
        &[],
    );
    let admin = std::fs::read_to_string(data.path().join("admin-key")).unwrap();
    let admin = admin.trim().to_string();
    let grpc = server.grpc.clone().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let generated = runtime.block_on(async {
        let channel = Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut feed = MonitoringClient::new(channel.clone())
            .watch_stats(with_key(WatchStatsRequest { interval_ms: 100 }, &admin))
            .await
            .unwrap()
            .into_inner();
        feed.message().await.unwrap().unwrap();
        let request = ChatRequest {
            model: "smollm2-135m-instruct".into(),
            messages: vec![ChatMessage {
                role: "user".into(),
                content: "Tell me a long story.".into(),
                ..Default::default()
            }],
            options: Some(GenerationOptions {
                max_tokens: Some(4000),
                ignore_eos: true,
                ..Default::default()
            }),
        };
        let mut chat = InferenceClient::new(channel)
            .chat(with_key(request, &admin))
            .await
            .unwrap()
            .into_inner();
        let mut events = 0;
        while events < 5 {
            chat.message().await.unwrap().unwrap();
            events += 1;
        }
        let pid = server.child.id().to_string();
        let term = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        assert!(term.unwrap().success());
        // The feed ends well before the grace period is over.
        let ended = tokio::time::timeout(std::time::Duration::from_millis(900), async {
            while feed.message().await.unwrap().is_some() {}
        });
        assert!(ended.await.is_ok(), "the stats feed outlived the shutdown");
        // The generation is cut off with UNAVAILABLE once the grace period is over.
        let cut = loop {
            match chat.message().await {
                Ok(Some(_)) => events += 1,
                Ok(None) => panic!("the 4000-token generation finished within the grace period"),
                Err(status) => break status,
            }
        };
        assert_eq!(cut.code(), Code::Unavailable, "{cut:?}");
        events - 1 // the `started` event
    });
    assert!(server.child.wait().unwrap().success());
    let records = common::ok(&common::cli(
        data.path(),
        &["usage", "--records", "--json", "--limit", "10"],
    ));
    let records: serde_json::Value = serde_json::from_str(&records).unwrap();
    let record = &records.as_array().unwrap()[0];
    // Cut off by the server, not cancelled by its client (issue 19): a 503, and not
    // counted as a client cancellation.
    assert_eq!(record["cancelled"], false, "{record}");
    assert_eq!(record["status"], 503, "{record}");
    let charged = record["completion_tokens"].as_u64().unwrap();
    // Tokens made while the cut-off travelled are charged too.
    assert!(charged >= generated as u64, "{charged} < {generated}");
}

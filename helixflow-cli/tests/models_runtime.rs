//! A server that loads models on first use from `--models-dir`, within `--memory-budget-mib`,
//! managed while it serves by `helixflow models load|unload|ps` and by the gRPC `Models`
//! service (which, like the HTTP admin routes, needs the admin scope).

mod common;

use common::with_key;
use helixflow_core::source::{self, ModelHome, ModelSpec, SilentProgress};
use helixflow_server::grpc::proto::auth_client::AuthClient;
use helixflow_server::grpc::proto::models_client::ModelsClient;
use helixflow_server::grpc::proto::{
    CreateKeyRequest, ListModelsInMemoryRequest, LoadModelRequest, UnloadModelRequest,
};
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::Code;

#[test]
fn models_load_on_first_use_and_are_managed_while_serving() {
    let data = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let gguf = source::resolve(
        &ModelSpec::parse("smollm2-135m-instruct").unwrap(),
        &ModelHome::from_env().unwrap(),
        &SilentProgress,
    )
    .unwrap()
    .path;
    for name in ["tiny", "other"] {
        std::os::unix::fs::symlink(&gguf, models.path().join(format!("{name}.gguf"))).unwrap();
    }
    // Room for two chat models of 16 MiB KV caches: the start-up model and one more.
    let per_model_mib = (std::fs::metadata(&gguf).unwrap().len() >> 20) + 17;
    let budget = (2 * per_model_mib + per_model_mib / 2).to_string();
    let server = common::Server::spawn_with_env(
        &[
            "--no-tls",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--model",
            "smollm2-135m-instruct",
            "--models-dir",
            models.path().to_str().unwrap(),
            "--kv-cache-mib",
            "16",
            "--memory-budget-mib",
            &budget,
            "--keep-alive",
            "1h",
        ],
        &[],
    );
    let url = server.url.clone();
    let admin = std::fs::read_to_string(data.path().join("admin-key")).unwrap();
    let admin = admin.trim();
    let complete = |model: &str| {
        let body = json!({"model": model, "prompt": "The sky is", "max_tokens": 3});
        common::http_as(
            &url,
            "POST",
            "/v1/completions",
            &body.to_string(),
            Some(admin),
        )
    };
    let cli = |args: &[&str]| {
        let args: Vec<&str> = args.iter().copied().chain(["--server", &url]).collect();
        common::cli(data.path(), &args)
    };

    // The listing: the start-up model loaded, the folder's models available.
    let ps: Value = serde_json::from_str(&common::ok(&cli(&["models", "ps", "--json"]))).unwrap();
    let state = |ps: &Value, id: &str| {
        ps["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| m["state"].as_str().unwrap().to_string())
    };
    assert_eq!(
        state(&ps, "smollm2-135m-instruct").as_deref(),
        Some("loaded")
    );
    assert_eq!(state(&ps, "tiny").as_deref(), Some("available"));

    // `models load`, then a request on it; the table shows it with its keep-alive.
    let out = common::ok(&cli(&["models", "load", "tiny", "--keep-alive", "10m"]));
    assert!(out.contains("tiny is loaded"), "{out}");
    let (status, body) = complete("tiny");
    assert_eq!(status, 200, "{body}");
    let table = common::ok(&cli(&["models", "ps"]));
    assert!(
        table.contains("tiny") && table.contains("unloaded in"),
        "{table}"
    );

    // A third model takes the room of the least recently used idle one.
    let (status, body) = complete("other");
    assert_eq!(status, 200, "{body}");
    let ps: Value = serde_json::from_str(&common::ok(&cli(&["models", "ps", "--json"]))).unwrap();
    assert_eq!(
        state(&ps, "smollm2-135m-instruct").as_deref(),
        Some("available")
    );
    assert_eq!(state(&ps, "other").as_deref(), Some("loaded"));
    assert!(ps["reserved_bytes"].as_u64().unwrap() <= ps["budget_bytes"].as_u64().unwrap());

    let out = common::ok(&cli(&["models", "unload", "tiny"]));
    assert!(out.contains("tiny is unloaded"), "{out}");
    let refused = cli(&["models", "unload", "tiny"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("404"));

    // The same over gRPC, with the admin scope only.
    let grpc = server.grpc.clone().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let channel = Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut models = ModelsClient::new(channel.clone());
        let inference_key = AuthClient::new(channel)
            .create_key(with_key(
                CreateKeyRequest {
                    name: "user".into(),
                    ..Default::default()
                },
                admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .secret;
        let refused = models
            .list_models(with_key(ListModelsInMemoryRequest {}, &inference_key))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);

        let loaded = models
            .load_model(with_key(
                LoadModelRequest {
                    model: "tiny".into(),
                    keep_alive: "-1".into(),
                },
                admin,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(loaded.state, "loaded");
        assert_eq!(loaded.kind, "chat");
        assert!(loaded.memory_bytes > 0);
        assert_eq!(loaded.expires_at, None);
        let list = models
            .list_models(with_key(ListModelsInMemoryRequest {}, admin))
            .await
            .unwrap()
            .into_inner();
        assert!(list.reserved_bytes <= list.budget_bytes.unwrap());
        assert!(list
            .models
            .iter()
            .any(|m| m.id == "tiny" && m.state == "loaded"));
        let unloaded = models
            .unload_model(with_key(
                UnloadModelRequest {
                    model: "tiny".into(),
                },
                admin,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(unloaded.unloaded);
        let missing = models
            .load_model(with_key(
                LoadModelRequest {
                    model: "../tiny".into(),
                    keep_alive: String::new(),
                },
                admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
    });
    server.stop();
}

//! `helixflow serve` end to end: the real binary on a free port, over HTTP and HTTPS, shut
//! down by SIGTERM.

mod common;

use std::process::Command;

use common::{http, Server};

#[test]
fn serves_chat_over_http_and_stops_cleanly_on_sigterm() {
    let server = Server::start(&["--no-tls"]);
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
    assert_eq!(http(&server.url, "GET", "/health", "").0, 200);
    let request = serde_json::json!({
        "model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": 20,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    });
    let (status, body) = http(
        &server.url,
        "POST",
        "/v1/chat/completions",
        &request.to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "L'Étoile, la Marseillaise, la femme, la femme au"
    );
    let (status, body) = http(&server.url, "POST", "/v1/chat/completions", "{");
    assert_eq!(status, 400, "{body}");
    assert!(server.stop().success());
}

#[test]
fn serves_https_with_a_generated_certificate_by_default() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let server = Server::start(&["--data-dir", dir, "--api-key", "k3y"]);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    assert!(data.path().join("localhost-cert.pem").exists());
    // The certificate is self-signed: curl is told to trust it.
    let cert = data.path().join("localhost-cert.pem");
    let url = server.url.replace("127.0.0.1", "localhost");
    let curl = |extra: &[&str]| {
        let out = Command::new("curl")
            .args([
                "-s",
                "--cacert",
                cert.to_str().unwrap(),
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(extra)
            .arg(format!("{url}/v1/models"))
            .output()
            .expect("curl runs");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(curl(&["-H", "Authorization: Bearer k3y"]), "200");
    assert_eq!(curl(&[]), "401");
    assert!(server.stop().success());
}

#[test]
fn refuses_an_open_address_without_a_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_helixflow"))
        .args([
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--grpc-port",
            "0",
            "--no-tls",
            "--no-database",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--api-key") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn ollama_clients_find_every_route_on_the_ollama_port() {
    let server = Server::start(&["--no-tls", "--ollama-port", "0"]);
    let ollama = server.ollama.clone().expect("the Ollama port");
    assert_ne!(ollama, server.url);
    assert_eq!(
        http(&ollama, "GET", "/", ""),
        (200, "Ollama is running".into())
    );
    let (status, body) = http(&ollama, "GET", "/api/version", "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"version\""), "{body}");
    let request = r#"{"model": "smollm2-135m-instruct", "stream": false,
        "options": {"num_predict": 4}, "messages": [{"role": "user", "content": "Hi"}]}"#;
    let (status, body) = http(&ollama, "POST", "/api/chat", request);
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["eval_count"], 4, "{answer}");
    assert!(server.stop().success());
}

#[test]
fn settings_come_from_a_config_file_unless_a_flag_says_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("helixflow.toml");
    std::fs::write(
        &config,
        "no_tls = true\nmodel = \"smollm2-135m-instruct\"\nport = 1\nmax_num_seqs = 4\n",
    )
    .unwrap();
    // `--port 0` (a flag) beats `port = 1` (the file); `no_tls` comes from the file.
    let server = Server::spawn(&["--config", config.to_str().unwrap()]);
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
    assert!(!server.url.ends_with(":1"), "{}", server.url);
    assert_eq!(http(&server.url, "GET", "/health", "").0, 200);
    assert!(server.stop().success());

    std::fs::write(&config, "prot = 8443\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_helixflow"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown setting `prot`"));
}

#[test]
fn a_model_that_cannot_load_stops_the_server_with_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_helixflow"))
        .args([
            "serve",
            "--no-tls",
            "--port",
            "0",
            "--grpc-port",
            "0",
            "--model",
            "/nonexistent/model.gguf",
            "--no-database",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nonexistent") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

mod grpc {
    use helixflow_server::grpc::proto::generation_event::Event;
    use helixflow_server::grpc::proto::inference_client::InferenceClient;
    use helixflow_server::grpc::proto::{
        completion_request, ChatMessage, ChatRequest, CompletionRequest, EmbedRequest,
        FinishReason, GenerationOptions, ListModelsRequest,
    };
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};
    use tonic::{Code, Request};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    use super::Server;

    const KEY: &str = "grpc-k3y";

    fn authorized<T>(message: T) -> Request<T> {
        let mut request = Request::new(message);
        let value = format!("Bearer {KEY}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
        request
    }

    fn golden_embedding() -> (String, Vec<f64>) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../helixflow-core/tests/fixtures/golden/minilm-embeddings.json");
        let golden: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let case = &golden["cases"][0];
        let vector = case["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        (case["input"].as_str().unwrap().to_string(), vector)
    }

    /// Streams a greedy chat over TLS and returns the events' text, token count and usage.
    async fn greedy_chat(
        client: &mut InferenceClient<Channel>,
        model: &str,
    ) -> Result<(String, usize, u32), tonic::Status> {
        let request = ChatRequest {
            model: model.into(),
            messages: vec![ChatMessage {
                role: "user".into(),
                content: "What is the capital of France?".into(),
                ..Default::default()
            }],
            options: Some(GenerationOptions {
                temperature: Some(0.0),
                max_tokens: Some(20),
                ..Default::default()
            }),
        };
        let mut stream = client.chat(authorized(request)).await?.into_inner();
        let (mut text, mut tokens, mut started, mut usage) = (String::new(), 0, false, None);
        while let Some(event) = stream.message().await? {
            match event.event.unwrap() {
                Event::Started(s) => {
                    assert!(!started && tokens == 0 && s.id.starts_with("chatcmpl-"));
                    assert!(s.prompt_tokens > 5);
                    started = true;
                }
                Event::Token(t) => {
                    assert!(started && usage.is_none());
                    text.push_str(&t.text);
                    tokens += 1;
                    if tokens == 20 {
                        assert_eq!(t.finish_reason(), FinishReason::Length);
                    }
                }
                Event::Finished(f) => usage = f.usage,
                Event::Reply(r) => panic!("a reply only where the answer may hold calls: {r:?}"),
            }
        }
        let usage = usage.expect("a finished event ends the stream");
        assert_eq!(
            usage.total_tokens,
            usage.prompt_tokens + usage.completion_tokens
        );
        Ok((text, tokens, usage.completion_tokens))
    }

    #[test]
    fn the_grpc_api_streams_chat_embeds_and_reports_health_over_tls() {
        let data = tempfile::tempdir().unwrap();
        let server = Server::start_with_embeddings(&[
            "--data-dir",
            data.path().to_str().unwrap(),
            "--api-key",
            KEY,
        ]);
        let port = server
            .grpc
            .as_deref()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string();
        let cert = std::fs::read(data.path().join("localhost-cert.pem")).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(cert))
                .domain_name("localhost");
            let channel = Channel::from_shared(format!("https://localhost:{port}"))
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await
                .expect("a TLS connection to the gRPC port");

            // Health needs no key; the server is ready, so every service is SERVING.
            let mut health = HealthClient::new(channel.clone());
            for service in ["", "helixflow.v1.Inference"] {
                let status = health
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(status.status(), ServingStatus::Serving, "{service:?}");
            }

            let mut client = InferenceClient::new(channel);
            let refused = client
                .list_models(Request::new(ListModelsRequest {}))
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::Unauthenticated);
            let models = client
                .list_models(authorized(ListModelsRequest {}))
                .await
                .unwrap()
                .into_inner()
                .models;
            let listed: Vec<(&str, &str)> = models
                .iter()
                .map(|m| (m.id.as_str(), m.kind.as_str()))
                .collect();
            assert_eq!(
                listed,
                [
                    ("smollm2-135m-instruct", "chat"),
                    ("all-minilm-l6-v2", "embedding")
                ]
            );

            // Greedy decoding reproduces the same text as the HTTP API.
            let (text, tokens, completion_tokens) =
                greedy_chat(&mut client, "smollm2-135m-instruct")
                    .await
                    .unwrap();
            assert_eq!(text, "L'Étoile, la Marseillaise, la femme, la femme au");
            assert_eq!((tokens, completion_tokens), (20, 20));

            // A raw completion from token ids, with logprobs.
            let request = CompletionRequest {
                model: "smollm2-135m-instruct".into(),
                prompt: Some(completion_request::Prompt::Text("The sky is".into())),
                options: Some(GenerationOptions {
                    max_tokens: Some(3),
                    temperature: Some(0.0),
                    logprobs: true,
                    top_logprobs: 2,
                    ..Default::default()
                }),
            };
            let mut stream = client
                .complete(authorized(request))
                .await
                .unwrap()
                .into_inner();
            let mut seen = 0;
            while let Some(event) = stream.message().await.unwrap() {
                if let Some(Event::Token(t)) = event.event {
                    assert!(t.logprob.unwrap() <= 0.0);
                    assert_eq!(t.top_logprobs.len(), 2);
                    seen += 1;
                }
            }
            assert_eq!(seen, 3);

            // Structured outputs: the same JSON objects as over HTTP, as text; a grammar
            // that does not compile names its field.
            let structured = |spec: &str| CompletionRequest {
                model: "smollm2-135m-instruct".into(),
                prompt: Some(completion_request::Prompt::Text("My PIN is".into())),
                options: Some(GenerationOptions {
                    max_tokens: Some(8),
                    structured_outputs: Some(spec.into()),
                    ..Default::default()
                }),
            };
            let mut stream = client
                .complete(authorized(structured(r#"{"regex": "[0-9]{4}"}"#)))
                .await
                .unwrap()
                .into_inner();
            let mut pin = String::new();
            while let Some(event) = stream.message().await.unwrap() {
                if let Some(Event::Token(t)) = event.event {
                    pin.push_str(&t.text);
                }
            }
            assert!(
                pin.len() == 4 && pin.bytes().all(|b| b.is_ascii_digit()),
                "{pin:?}"
            );
            let bad = client
                .complete(authorized(structured(r#"{"regex": "(unclosed"}"#)))
                .await
                .unwrap_err();
            assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
            assert!(bad.message().contains("structured_outputs"), "{bad:?}");

            // Tools: the choice's reply, read as a message, follows its last token.
            let tools = r#"[{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                "required": ["city"], "additionalProperties": false}}}]"#;
            let request = ChatRequest {
                model: "smollm2-135m-instruct".into(),
                messages: vec![ChatMessage {
                    role: "user".into(),
                    content: "Weather in Paris?".into(),
                    ..Default::default()
                }],
                options: Some(GenerationOptions {
                    max_tokens: Some(100),
                    temperature: Some(0.0),
                    tools: Some(tools.into()),
                    tool_choice: Some(r#""required""#.into()),
                    parallel_tool_calls: Some(false),
                    ..Default::default()
                }),
            };
            let mut stream = client.chat(authorized(request)).await.unwrap().into_inner();
            let mut reply = None;
            while let Some(event) = stream.message().await.unwrap() {
                if let Some(Event::Reply(r)) = event.event {
                    reply = Some(r);
                }
            }
            let reply = reply.expect("a reply");
            assert_eq!(reply.finish_reason(), FinishReason::ToolCalls, "{reply:?}");
            let call = &reply.tool_calls[0];
            assert_eq!(call.name, "get_weather");
            let args: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
            assert!(args["city"].is_string(), "{args}");

            let (input, expected) = golden_embedding();
            let embedded = client
                .embed(authorized(EmbedRequest {
                    model: "all-minilm-l6-v2".into(),
                    texts: vec![input],
                    token_inputs: Vec::new(),
                    truncate: false,
                }))
                .await
                .unwrap()
                .into_inner();
            let got = &embedded.embeddings[0].values;
            let dot: f64 = got
                .iter()
                .zip(&expected)
                .map(|(a, b)| f64::from(*a) * b)
                .sum();
            let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
            let cosine = dot
                / (norm(&mut got.iter().map(|&x| f64::from(x)))
                    * norm(&mut expected.iter().copied()));
            assert!(cosine >= 0.9999, "cosine {cosine}");
            assert!(embedded.usage.unwrap().prompt_tokens > 0);

            // Errors are statuses with the HTTP API's messages.
            let unknown = greedy_chat(&mut client, "no-such-model").await.unwrap_err();
            assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
            let wrong_kind = greedy_chat(&mut client, "all-minilm-l6-v2")
                .await
                .unwrap_err();
            assert_eq!(wrong_kind.code(), Code::NotFound, "{wrong_kind:?}");
            assert!(wrong_kind.message().contains("not a chat model"));
            let empty = client
                .chat(authorized(ChatRequest {
                    model: "smollm2-135m-instruct".into(),
                    messages: Vec::new(),
                    options: None,
                }))
                .await
                .unwrap_err();
            assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
        });
        assert!(server.stop().success());
    }
}

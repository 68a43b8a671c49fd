//! `helixflow serve` under many streams over real sockets: clients that hang up mid-stream
//! free everything they held, and several `--model`s are served side by side.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{http, post_json, send, Server};

/// The sum of every series of metric `name` (labelled or not).
fn metric(text: &str, name: &str) -> f64 {
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
    assert!(!values.is_empty(), "no {name} in {text}");
    values.iter().sum()
}

/// Sends a streaming chat request and reads until the first SSE event has arrived.
fn open_stream(url: &str, question: &str) -> TcpStream {
    let body = serde_json::json!({
        "model": "smollm2-135m-instruct", "stream": true, "max_tokens": 1000,
        "temperature": 0.8, "seed": 7, "ignore_eos": true,
        "messages": [{"role": "user", "content": question}],
    })
    .to_string();
    let mut stream = send(url, "POST", "/v1/chat/completions", &body, None);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data: {") {
        let n = stream.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the stream closed early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    stream
}

#[test]
fn twenty_streams_dropped_mid_way_free_their_sequences_and_blocks() {
    let server = Server::spawn(&["--no-tls", "--model", "smollm2-135m-instruct"]);
    let streams: Vec<TcpStream> = (0..20)
        .map(|i| open_stream(&server.url, &format!("Tell me story number {i}.")))
        .collect();
    let (_, during) = http(&server.url, "GET", "/metrics", "");
    assert!(
        metric(&during, "helixflow_running_sequences") >= 1.0,
        "{during}"
    );
    assert!(
        metric(&during, "helixflow_kv_blocks_used") >= 1.0,
        "{during}"
    );
    drop(streams);
    let start = Instant::now();
    loop {
        let (status, text) = http(&server.url, "GET", "/metrics", "");
        assert_eq!(status, 200);
        if metric(&text, "helixflow_running_sequences") == 0.0
            && metric(&text, "helixflow_kv_blocks_used") == 0.0
            && metric(&text, "helixflow_queue_length") == 0.0
        {
            assert_eq!(
                metric(&text, "helixflow_cancelled_requests_total"),
                20.0,
                "{text}"
            );
            // Far fewer than 20 × 1000 tokens were generated: the work stopped.
            assert!(
                metric(&text, "helixflow_completion_tokens_total") < 20.0 * 500.0,
                "{text}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the dropped streams were not cancelled: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The server still answers.
    let request = serde_json::json!({
        "model": "smollm2-135m-instruct", "max_tokens": 3,
        "messages": [{"role": "user", "content": "Hi"}],
    });
    let (status, body) = post_json(&server.url, "/v1/chat/completions", &request);
    assert_eq!(status, 200, "{body}");
    assert!(server.stop().success());
}

#[test]
fn several_models_are_served_side_by_side() {
    // The built-in chat model twice (by id and by path) and the embedding model.
    let home = std::env::var_os("HELIXFLOW_HOME");
    let path = std::process::Command::new(env!("CARGO_BIN_EXE_helixflow"))
        .args(["models", "list", "--json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&path.stdout).unwrap();
    let gguf = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "smollm2-135m-instruct")
        .and_then(|m| m["path"].as_str())
        .unwrap_or_else(|| panic!("the chat model is provisioned ({home:?}): {listed}"))
        .to_string();
    let server = Server::spawn(&[
        "--no-tls",
        "--model",
        "smollm2-135m-instruct",
        "--model",
        &gguf,
        "--model",
        "all-minilm-l6-v2",
    ]);
    let (status, body) = http(&server.url, "GET", "/v1/models", "");
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    // The served models, loaded (cached built-ins follow them, available).
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] == "loaded")
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(ids[0], "smollm2-135m-instruct");
    assert_eq!(ids[2], "all-minilm-l6-v2");
    // Each chat model has its own engine and answers the same greedy question alike.
    let mut answers = Vec::new();
    for id in &ids[..2] {
        let request = serde_json::json!({
            "model": id, "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
        });
        let (status, body) = post_json(&server.url, "/v1/chat/completions", &request);
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["model"], *id);
        answers.push(answer["choices"][0]["message"]["content"].clone());
    }
    assert_eq!(answers[0], answers[1]);
    // The embedding model is not a chat model.
    let request = serde_json::json!({
        "model": "all-minilm-l6-v2", "messages": [{"role": "user", "content": "Hi"}],
    });
    let (status, body) = post_json(&server.url, "/v1/chat/completions", &request);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not a chat model"), "{body}");
    let (_, metrics) = http(&server.url, "GET", "/metrics", "");
    assert!(
        metrics.contains(&format!("helixflow_kv_blocks_free{{model=\"{}\"}}", ids[1])),
        "{metrics}"
    );
    assert!(server.stop().success());
}

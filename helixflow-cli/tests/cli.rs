//! The `helixflow` binary end to end, on the default models (provisioned into the model cache
//! on first use). User mistakes must end with a message and a non-zero exit, never a panic.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn helixflow(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_helixflow"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

/// A user mistake: exit code 1, an `error:` line, no panic or backtrace.
fn assert_user_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("error:") && stderr.contains(needle),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn run_json_prints_one_chat_completion() {
    let out = helixflow(
        &[
            "run",
            "--json",
            "--temperature",
            "0",
            "--max-tokens",
            "8",
            "What is the capital of France?",
        ],
        None,
    );
    let v = json(&out);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "smollm2-135m-instruct");
    assert_eq!(v["usage"]["prompt_tokens"], 37);
    let completion = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=8).contains(&completion));
    assert!(!v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
}

#[test]
fn run_streams_the_same_text_as_json_and_reads_stdin() {
    let args = [
        "run",
        "--temperature",
        "0",
        "--max-tokens",
        "12",
        "--system",
        "You are a concise assistant.",
    ];
    let streamed = helixflow(
        &[&args[..], &["-"]].concat(),
        Some("Name three primary colors."),
    );
    assert!(streamed.status.success());
    let json_out = json(&helixflow(
        &[&args[..], &["--json", "Name three primary colors."]].concat(),
        None,
    ));
    let text = String::from_utf8(streamed.stdout).unwrap();
    assert_eq!(
        text.trim_end_matches('\n'),
        json_out["choices"][0]["message"]["content"]
    );
}

#[test]
fn run_with_a_seed_is_reproducible() {
    let args = [
        "run",
        "--json",
        "--temperature",
        "1.0",
        "--seed",
        "7",
        "--max-tokens",
        "10",
        "Tell me a story.",
    ];
    let a = json(&helixflow(&args, None));
    let b = json(&helixflow(&args, None));
    assert_eq!(a["choices"][0]["message"], b["choices"][0]["message"]);
}

#[test]
fn run_accepts_a_messages_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("messages.json");
    std::fs::write(
        &file,
        r#"[{"role":"system","content":"You are a concise assistant."},
            {"role":"user","content":[{"type":"text","text":"Name three primary colors."}]}]"#,
    )
    .unwrap();
    let v = json(&helixflow(
        &[
            "run",
            "--json",
            "--temperature",
            "0",
            "--max-tokens",
            "4",
            "--messages",
            file.to_str().unwrap(),
        ],
        None,
    ));
    assert_eq!(v["usage"]["prompt_tokens"], 25);
}

#[test]
fn user_mistakes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad_json = dir.path().join("bad.json");
    std::fs::write(&bad_json, "[{").unwrap();
    assert_user_error(
        &helixflow(&["run", "--messages", bad_json.to_str().unwrap()], None),
        "not valid JSON",
    );

    let not_gguf = dir.path().join("broken.gguf");
    std::fs::write(
        &not_gguf,
        b"GGUF\x03\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff\0\0\0\0\0\0\0\0",
    )
    .unwrap();
    assert_user_error(
        &helixflow(&["run", "--model", not_gguf.to_str().unwrap(), "hi"], None),
        "broken.gguf",
    );

    assert_user_error(
        &helixflow(&["run", "--model", "./missing.gguf", "hi"], None),
        "missing.gguf",
    );
    assert_user_error(
        &helixflow(&["run", "--model", "no-such-model", "hi"], None),
        "no-such-model",
    );
    assert_user_error(
        &helixflow(&["run", "--temperature=-1", "hi"], None),
        "temperature",
    );
    assert_user_error(&helixflow(&["run"], None), "PROMPT");
    assert_user_error(
        &helixflow(&["embed", "--model", "smollm2-135m-instruct", "x"], None),
        "chat model",
    );
}

#[test]
fn embed_prints_unit_vectors() {
    let v = json(&helixflow(
        &[
            "embed",
            "The cat sits on the mat.",
            "A feline is resting on a rug.",
        ],
        None,
    ));
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for item in data {
        let vector: Vec<f64> = serde_json::from_value(item["embedding"].clone()).unwrap();
        assert_eq!(vector.len(), 384);
        let norm: f64 = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    assert_eq!(v["usage"]["prompt_tokens"], 9 + 11);
}

#[test]
fn models_list_shows_the_cached_default_models() {
    // Make sure both are provisioned, then list them.
    assert!(helixflow(&["models", "pull", "all-minilm-l6-v2"], None)
        .status
        .success());
    let v = json(&helixflow(&["models", "list", "--json"], None));
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"all-minilm-l6-v2"), "{ids:?}");
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["size_bytes"].as_u64().unwrap() > 0));
}

#[test]
fn bench_reports_prefill_and_decode_rates() {
    let v = json(&helixflow(
        &[
            "bench",
            "--prompt-tokens",
            "16",
            "--gen-tokens",
            "4",
            "--runs",
            "1",
            "--json",
        ],
        None,
    ));
    assert!(v["prefill_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
}

/// The report says how many threads the kernels ran on (`HELIXFLOW_NUM_THREADS` where set)
/// and whether the products ran in block order (`HELIXFLOW_BLOCK_PRODUCTS=1`).
#[test]
fn bench_reports_the_kernel_threads_and_product_order() {
    for blocks in ["0", "1"] {
        let out = Command::new(env!("CARGO_BIN_EXE_helixflow"))
            .args(["bench", "--prompt-tokens", "8", "--gen-tokens", "2"])
            .args(["--runs", "1", "--json"])
            .env("HELIXFLOW_NUM_THREADS", "1")
            .env("HELIXFLOW_BLOCK_PRODUCTS", blocks)
            .output()
            .expect("the binary runs");
        let v = json(&out);
        assert_eq!(v["threads"], 1);
        assert_eq!(v["block_products"], blocks == "1", "{v}");
    }
}

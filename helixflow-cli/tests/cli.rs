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

#[test]
fn bench_embeddings_reports_sentences_per_second() {
    let v = json(&helixflow(
        &["bench", "--embeddings", "--runs", "1", "--json"],
        None,
    ));
    assert_eq!(v["model"], "all-minilm-l6-v2");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 6, "{v}");
    for r in results {
        assert!(r["sentences_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["gflops"].as_f64().unwrap() > 0.0, "{r}");
    }
    let long = results.iter().find(|r| r["input"] == "long").unwrap();
    assert_eq!(long["tokens_per_input"], 256);
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

/// A tiny Llama-style Hugging Face folder (one layer, eight words, weights from a fixed
/// sequence) for the safetensors path of the CLI.
fn tiny_hf_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (vocab, hidden, ff, heads, kv_heads, head_dim) = (8usize, 32usize, 64usize, 2, 1, 16);
    let mut state = 12345u64;
    let mut values = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    };
    let p = "model.layers.0";
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = vec![
        (
            "model.embed_tokens.weight".into(),
            vec![vocab, hidden],
            values(vocab * hidden, 2.0),
        ),
        ("model.norm.weight".into(), vec![hidden], vec![1.0; hidden]),
        (
            "lm_head.weight".into(),
            vec![vocab, hidden],
            values(vocab * hidden, 2.0),
        ),
        (
            format!("{p}.input_layernorm.weight"),
            vec![hidden],
            vec![1.0; hidden],
        ),
        (
            format!("{p}.post_attention_layernorm.weight"),
            vec![hidden],
            vec![1.0; hidden],
        ),
        (
            format!("{p}.self_attn.q_proj.weight"),
            vec![heads * head_dim, hidden],
            values(heads * head_dim * hidden, 0.5),
        ),
        (
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv_heads * head_dim, hidden],
            values(kv_heads * head_dim * hidden, 0.5),
        ),
        (
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv_heads * head_dim, hidden],
            values(kv_heads * head_dim * hidden, 0.5),
        ),
        (
            format!("{p}.self_attn.o_proj.weight"),
            vec![hidden, heads * head_dim],
            values(hidden * heads * head_dim, 0.5),
        ),
        (
            format!("{p}.mlp.gate_proj.weight"),
            vec![ff, hidden],
            values(ff * hidden, 0.5),
        ),
        (
            format!("{p}.mlp.up_proj.weight"),
            vec![ff, hidden],
            values(ff * hidden, 0.5),
        ),
        (
            format!("{p}.mlp.down_proj.weight"),
            vec![hidden, ff],
            values(hidden * ff, 0.5),
        ),
    ];
    // safetensors: an 8-byte header length, the JSON header, then the F32 data.
    let (mut header, mut data) = (serde_json::Map::new(), Vec::new());
    for (name, shape, v) in &tensors {
        let start = data.len();
        data.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let header = serde_json::Value::Object(header).to_string().into_bytes();
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header);
    file.extend(data);
    std::fs::write(dir.path().join("model.safetensors"), file).unwrap();
    let config = serde_json::json!({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": vocab,
        "hidden_size": hidden, "intermediate_size": ff, "num_hidden_layers": 1,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let words = ["<unk>", "<s>", "</s>", "red", "green", "blue", "sky", "sea"];
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "normalizer": null,
        "added_tokens": [
            {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "unk_token": "<unk>",
                  "vocab": words.iter().enumerate().map(|(i, w)| (w.to_string(), serde_json::json!(i)))
                .collect::<serde_json::Map<_, _>>()}
    });
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let tokenizer_config = serde_json::json!({
        "bos_token": "<s>", "eos_token": "</s>",
        "chat_template": "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    });
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        tokenizer_config.to_string(),
    )
    .unwrap();
    dir
}

/// A safetensors folder runs from the CLI, as it is and quantised at load; `--quantize`
/// on a GGUF is a user error, not a silently ignored flag.
#[test]
fn run_takes_a_safetensors_folder_and_quantizes_it_on_request() {
    let folder = tiny_hf_folder();
    let path = folder.path().to_str().unwrap();
    for quantize in [None, Some("q8_0"), Some("q4_0")] {
        let mut args = vec![
            "run",
            "--json",
            "--temperature",
            "0",
            "--max-tokens",
            "4",
            "--model",
            path,
        ];
        if let Some(q) = quantize {
            args.extend(["--quantize", q]);
        }
        args.push("red sky");
        let v = json(&helixflow(&args, None));
        assert_eq!(v["object"], "chat.completion", "{quantize:?}");
        assert_eq!(v["usage"]["prompt_tokens"], 2, "{quantize:?}");
    }
    let out = helixflow(
        &["run", "--quantize", "q8_0", "--max-tokens", "1", "hi"],
        None,
    );
    assert_user_error(&out, "safetensors");
    let out = helixflow(&["run", "--model", path, "--quantize", "q2_k", "hi"], None);
    assert_eq!(out.status.code(), Some(2), "clap refuses an unknown format");
}

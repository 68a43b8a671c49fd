//! `helixflow bench`'s serving sweeps end to end on the default chat model: in-process, and
//! over HTTP against the real `helixflow serve`.

mod common;

use std::process::{Command, Output};

use common::Server;
use serde_json::Value;

/// The sweep every test runs: tiny, so that each takes seconds.
const SWEEP: [&str; 6] = [
    "--streams",
    "1,2",
    "--prompt-tokens",
    "8",
    "--gen-tokens",
    "4",
];

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_helixflow"))
        .arg("bench")
        .args(args)
        .env_remove("HELIXFLOW_API_KEY")
        .output()
        .expect("the binary runs")
}

/// The JSON report of a sweep that succeeded, checked against [`SWEEP`].
fn report(out: &Output, mode: &str) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v["mode"], mode, "{v}");
    assert_eq!(v["model"], "smollm2-135m-instruct");
    assert_eq!(
        (
            &v["prompt_tokens"],
            &v["gen_tokens"],
            &v["requests_per_stream"]
        ),
        (&8.into(), &4.into(), &1.into())
    );
    let levels = v["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2, "{v}");
    for (level, streams) in levels.iter().zip([1, 2]) {
        let f = |key: &str| {
            level[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{key}: {level}"))
        };
        assert_eq!(level["streams"], streams);
        assert_eq!(level["requests"], streams);
        assert_eq!(level["completion_tokens"], 4 * streams);
        assert!(
            f("wall_s") > 0.0 && f("output_tokens_per_s") > 0.0,
            "{level}"
        );
        assert!(f("requests_per_s") > 0.0, "{level}");
        assert!(0.0 < f("ttft_ms_p50") && f("ttft_ms_p50") <= f("ttft_ms_p99"));
        // Up to three gaps between four tokens (fewer where a chunk carries several).
        assert!(0.0 <= f("itl_ms_p50") && f("itl_ms_p50") <= f("itl_ms_p99"));
    }
    v
}

#[test]
fn the_in_process_sweep_reports_every_level() {
    let v = report(&bench(&[&SWEEP[..], &["--json"]].concat()), "in-process");
    assert!(v["seed"].is_u64(), "{v}");
    assert!(v["threads"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["block_products"].is_boolean(), "{v}");
    assert!(v["levels"][0]["peak_rss_mib"].as_f64().unwrap() > 0.0);
    // Three tokens after each request's first, over the span from first to last.
    for level in v["levels"].as_array().unwrap() {
        assert!(
            level["decode_tokens_per_s"].as_f64().unwrap() > 0.0,
            "{level}"
        );
    }
    // The table: a header and a row per level.
    let out = bench(&SWEEP);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.starts_with("streams"), "{table}");
}

#[test]
fn the_in_process_sweep_holds_answers_to_a_json_schema() {
    // An array that cannot close within the budget, so every request runs its full length.
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json");
    std::fs::write(
        &schema,
        r#"{"type": "array", "minItems": 1000, "items": {"type": "integer"}}"#,
    )
    .unwrap();
    let schema = schema.to_str().unwrap();
    let v = report(
        &bench(&[&SWEEP[..], &["--json", "--json-schema", schema]].concat()),
        "in-process",
    );
    assert_eq!(v["json_schema"], schema, "{v}");
    assert!(v["levels"][0]["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    // A schema that does not compile is an error naming the flag.
    std::fs::write(dir.path().join("bad.json"), r#"{"type": "frobnicate"}"#).unwrap();
    let bad = dir.path().join("bad.json");
    let out = bench(&[&SWEEP[..], &["--json-schema", bad.to_str().unwrap()]].concat());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--json-schema"));
    // One whose answers end within --gen-tokens says so, rather than timing short requests.
    std::fs::write(dir.path().join("short.json"), r#"{"type": "boolean"}"#).unwrap();
    let short = dir.path().join("short.json");
    let out = bench(&[&SWEEP[..], &["--json-schema", short.to_str().unwrap()]].concat());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("minItems"), "{stderr}");
}

#[test]
fn the_http_sweep_streams_from_the_real_server() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::spawn(&["--no-tls", "--data-dir", data.path().to_str().unwrap()]);
    let v = report(
        &bench(
            &[
                &SWEEP[..],
                &["--json", "--seed", "7", "--serve", &server.url],
            ]
            .concat(),
        ),
        "http",
    );
    assert_eq!(v["url"], server.url.as_str());
    assert_eq!(v["seed"], 7);
    assert!(v["levels"][1]["peak_rss_mib"].is_null());

    // Failures end the command with the server's reason.
    let out = bench(&["--serve", &server.url, "--model", "no-such-model"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("404") && stderr.contains("no-such-model"),
        "{stderr}"
    );
    let out = bench(&["--serve", "http://127.0.0.1:1", "--streams", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("connecting to 127.0.0.1:1"), "{stderr}");
    assert!(server.stop().success());
}

#[test]
fn the_platform_overhead_benchmark_measures_every_request() {
    let out = Command::new(env!("CARGO_BIN_EXE_helixflow"))
        .args([
            "bench",
            "--platform",
            "--rate",
            "200",
            "--seconds",
            "1",
            "--json",
        ])
        .env_remove("DATABASE_URL")
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backend"], "sqlite");
    let cases = report["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        assert_eq!(case["requests"], 200, "{case}");
        let (p50, p99, max) = (
            case["p50_us"].as_f64().unwrap(),
            case["p99_us"].as_f64().unwrap(),
            case["max_us"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{case}");
        assert!(case["achieved_rate"].as_f64().unwrap() > 0.0);
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_helixflow"))
        .args(["bench", "--platform", "--rate", "0"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
}

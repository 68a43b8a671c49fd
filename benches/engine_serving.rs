//! The in-process serving benchmark, kept under its old name: runs
//! `helixflow bench --streams 1,4,16,64 [ARGS...]` (built in release mode by cargo), which drives
//! the engine with N concurrent streams and reports aggregate throughput, time to first token,
//! inter-token latency and peak memory. `benches/serving.sh` compares it with the same sweep
//! over HTTP.
//!
//!   cargo run --release -p helixflow-benches --bin engine-serving -- [--streams 1,4,16,64]

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

fn main() -> Result<ExitCode> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if !args
        .iter()
        .any(|a| a == "--streams" || a.starts_with("--streams="))
    {
        args.splice(0..0, ["--streams".to_string(), "1,4,16,64".to_string()]);
    }
    // `cargo run` says which cargo it is; the workspace is this package's parent.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["run", "--quiet", "--release", "-p", "helixflow-cli", "--"])
        .arg("bench")
        .args(&args)
        .status()
        .context("running cargo")?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

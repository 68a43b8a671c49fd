//! The clients users point at a server, unchanged, against a running `helixflow serve`: the
//! official OpenAI Python SDK (chat, streams, logprobs, embeddings, structured outputs,
//! errors, and the Responses API), and for tool calls also LangChain's `ChatOpenAI` and the official Node SDK; the
//! official `anthropic` SDK against the Messages API, and the `ollama` client against Ollama's
//! API. The
//! scripts live in `tests/sdk`; each prints a line per check and `all ok` at the end.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;

/// A Python with `module` importable (`package` installs it): `$HELIXFLOW_TEST_PYTHON`
/// (which must have it), else a virtual environment made (once) under the user's cache
/// directory.
fn python_with(module: &str, package: &str) -> PathBuf {
    if let Some(python) = std::env::var_os("HELIXFLOW_TEST_PYTHON") {
        return python.into();
    }
    let venv = dirs_cache().join("helixflow-test/venv-openai");
    let python = venv.join("bin/python");
    let imports = |python: &Path| {
        Command::new(python)
            .args(["-c", &format!("import {module}")])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !imports(&python) {
        if !python.exists() {
            let made = Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(&venv)
                .status();
            assert!(made.unwrap().success(), "python3 -m venv failed");
        }
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "-q", "openai==3.54.0", package])
            .status()
            .unwrap();
        assert!(installed.success(), "installing {package} failed");
    }
    python
}

/// A Python with the official `openai` package.
fn openai_python() -> PathBuf {
    python_with("openai", "openai==3.54.0")
}

/// A Python with `langchain-openai` beside `openai`.
fn langchain_python() -> PathBuf {
    python_with("langchain_openai", "langchain-openai==1.8.1")
}

/// A Python with the official `anthropic` package beside `openai`.
fn anthropic_python() -> PathBuf {
    python_with("anthropic", "anthropic==2.17.0")
}

/// A Python with the official `ollama` client beside `openai`.
fn ollama_python() -> PathBuf {
    python_with("ollama", "ollama==0.6.3")
}

/// A `node_modules` folder with the official `openai` package for Node:
/// `$HELIXFLOW_TEST_NODE_MODULES`, else installed (once) under the user's cache directory.
fn node_openai() -> PathBuf {
    if let Some(modules) = std::env::var_os("HELIXFLOW_TEST_NODE_MODULES") {
        return modules.into();
    }
    let prefix = dirs_cache().join("helixflow-test/node-openai-6.49.0");
    if !prefix.join("node_modules/openai").exists() {
        let installed = Command::new("npm")
            .args(["install", "--silent", "--prefix"])
            .arg(&prefix)
            .arg("openai@6.49.0")
            .status()
            .unwrap();
        assert!(installed.success(), "npm install openai failed");
    }
    prefix.join("node_modules")
}

fn dirs_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .expect("a cache directory")
}

/// Runs `program tests/sdk/SCRIPT BASE_URL sdk-key ARGS…` against `server`: it must end with
/// `all ok`.
fn run_sdk_script(program: Command, script: &str, server: &Server, args: &[&Path]) {
    run_sdk_script_as(program, script, server, "sdk-key", args);
}

/// [`run_sdk_script`] with another API key.
fn run_sdk_script_as(
    mut program: Command,
    script: &str,
    server: &Server,
    key: &str,
    args: &[&Path],
) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let out = program
        .arg(script)
        .arg(format!("{}/v1", server.url))
        .arg(key)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_official_openai_sdk_just_works() {
    let server = Server::start_with_embeddings(&["--no-tls", "--api-key", "sdk-key"]);
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../helixflow-core/tests/fixtures/golden");
    run_sdk_script(
        Command::new(openai_python()),
        "openai_client.py",
        &server,
        &[&golden],
    );
    assert!(server.stop().success());
}

#[test]
fn the_openai_sdk_s_responses_api_just_works() {
    // On the platform database, whose keys own the responses they store.
    let data = tempfile::tempdir().unwrap();
    let server = Server::spawn_with_env(
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
    let python = Command::new(openai_python());
    run_sdk_script_as(python, "openai_responses.py", &server, admin.trim(), &[]);
    assert!(server.stop().success());
}

#[test]
fn tool_calls_work_through_the_openai_sdks_and_langchain() {
    let server = Server::start(&["--no-tls", "--api-key", "sdk-key"]);
    run_sdk_script(
        Command::new(openai_python()),
        "openai_tools.py",
        &server,
        &[],
    );
    let langchain = Command::new(langchain_python());
    run_sdk_script(langchain, "langchain_client.py", &server, &[]);
    let mut node = Command::new("node");
    node.env("NODE_PATH", node_openai());
    run_sdk_script(node, "openai_tools.cjs", &server, &[]);
    assert!(server.stop().success());
}

#[test]
fn the_anthropic_sdk_just_works() {
    let server = Server::start(&["--no-tls", "--api-key", "sdk-key"]);
    let python = Command::new(anthropic_python());
    run_sdk_script(python, "anthropic_client.py", &server, &[]);
    assert!(server.stop().success());
}

#[test]
fn the_ollama_client_just_works() {
    let server = Server::start_with_embeddings(&["--no-tls", "--api-key", "sdk-key"]);
    run_sdk_script(
        Command::new(ollama_python()),
        "ollama_client.py",
        &server,
        &[],
    );
    assert!(server.stop().success());
}

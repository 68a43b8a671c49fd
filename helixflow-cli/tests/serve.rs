//! `helixflow serve` end to end: the real binary on a free port, over HTTP and HTTPS, shut
//! down by SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running server and the address it announced.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    /// A server of the chat model only.
    fn start(args: &[&str]) -> Self {
        Self::spawn(&[&["--embedding-model", "none"], args].concat())
    }

    /// A server of both default models.
    fn start_with_embeddings(args: &[&str]) -> Self {
        Self::spawn(args)
    }

    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_helixflow"))
            .args(["serve", "--port", "0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("the server announces its address before exiting")
                .unwrap();
            if let Some(url) = line.strip_prefix("helixflow: serving on ") {
                break url.to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let server = Self { child, url };
        server.wait_ready();
        server
    }

    /// The listener opens before the models are loaded: wait for `/ready`.
    fn wait_ready(&self) {
        let start = std::time::Instant::now();
        loop {
            let status = if self.url.starts_with("http://") {
                http(&self.url, "GET", "/ready", "").0.to_string()
            } else {
                let out = Command::new("curl")
                    .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
                    .arg(format!("{}/ready", self.url))
                    .output()
                    .expect("curl runs");
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            if status == "200" {
                return;
            }
            assert_eq!(status, "503", "/ready before loading must be 503");
            assert!(start.elapsed() < Duration::from_secs(120), "never ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        self.child.wait().unwrap()
    }
}

/// A plain HTTP/1.1 exchange; returns the status code and the body.
fn http(url: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let host = url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

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
        .args(["serve", "--host", "0.0.0.0", "--port", "0", "--no-tls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--api-key") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// A Python with the official `openai` package: `$HELIXFLOW_TEST_PYTHON`, else a virtual
/// environment made (once) under the user's cache directory.
fn openai_python() -> std::path::PathBuf {
    if let Some(python) = std::env::var_os("HELIXFLOW_TEST_PYTHON") {
        return python.into();
    }
    let venv = dirs_cache().join("helixflow-test/venv-openai");
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        let made = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .unwrap();
        assert!(made.success(), "python3 -m venv failed");
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "-q", "openai==3.54.0"])
            .status()
            .unwrap();
        assert!(installed.success(), "installing openai failed");
    }
    python
}

fn dirs_cache() -> std::path::PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))
        .expect("a cache directory")
}

#[test]
fn the_official_openai_sdk_just_works() {
    let python = openai_python();
    let server = Server::start_with_embeddings(&["--no-tls", "--api-key", "sdk-key"]);
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../helixflow-core/tests/fixtures/golden");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_client.py");
    let out = Command::new(python)
        .arg(script)
        .arg(format!("{}/v1", server.url))
        .arg("sdk-key")
        .arg(golden)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server.stop().success());
}

#[test]
fn settings_come_from_a_config_file_unless_a_flag_says_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("helixflow.toml");
    std::fs::write(
        &config,
        "no_tls = true\nembedding_model = \"none\"\nport = 1\nmax_num_seqs = 4\n",
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
            "--model",
            "/nonexistent/model.gguf",
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

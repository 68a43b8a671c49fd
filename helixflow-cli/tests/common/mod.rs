//! What the end-to-end tests of `helixflow serve` share: the real binary started on free
//! ports, and a minimal HTTP client.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running server and the address it announced.
pub struct Server {
    /// The server process.
    pub child: Child,
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// The gRPC address (`host:port`).
    pub grpc: Option<String>,
    /// The Ollama port's URL, with `--ollama-port`.
    pub ollama: Option<String>,
}

impl Server {
    /// A server of the chat model only (see [`Self::spawn`]).
    pub fn start(args: &[&str]) -> Self {
        Self::spawn(&[&["--model", "smollm2-135m-instruct"], args].concat())
    }

    /// A server of both default models (see [`Self::spawn`]).
    pub fn start_with_embeddings(args: &[&str]) -> Self {
        Self::spawn(args)
    }

    /// Starts `helixflow serve` on free ports with `args`, without the platform database
    /// (`--no-database`), and waits until it is ready.
    pub fn spawn(args: &[&str]) -> Self {
        let args: Vec<&str> = args.iter().copied().chain(["--no-database"]).collect();
        Self::spawn_with_env(&args, &[])
    }

    /// Starts `helixflow serve` on free ports with `args` and extra environment variables
    /// (the platform database is on unless they say otherwise), and waits until it is ready.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_helixflow"))
            .args(["serve", "--port", "0", "--grpc-port", "0"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        // The gRPC address comes first, then the HTTP one.
        let mut grpc = None;
        let url = loop {
            let line = lines
                .next()
                .expect("the server announces its address before exiting")
                .unwrap();
            if let Some(addr) = line.strip_prefix("helixflow: gRPC on ") {
                grpc = Some(addr.to_string());
            }
            if let Some(url) = line.strip_prefix("helixflow: serving on ") {
                break url.to_string();
            }
        };
        // With `--ollama-port`, that address follows.
        let ollama = args.contains(&"--ollama-port").then(|| loop {
            let line = lines.next().expect("the Ollama port is announced").unwrap();
            if let Some(url) = line.strip_prefix("helixflow: serving Ollama's API on ") {
                break url.to_string();
            }
        });
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let server = Self {
            child,
            url,
            grpc,
            ollama,
        };
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
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    /// A test that fails leaves no server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a connection and sends one HTTP/1.1 request (`Connection: close`); the response is
/// left to read.
pub fn send(url: &str, method: &str, path: &str, body: &str, key: Option<&str>) -> TcpStream {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let host = url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         {auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream
}

/// A plain HTTP/1.1 exchange; returns the status code and the body.
pub fn http(url: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    http_as(url, method, path, body, None)
}

/// [`http`] with `Authorization: Bearer <key>`.
pub fn http_as(
    url: &str,
    method: &str,
    path: &str,
    body: &str,
    key: Option<&str>,
) -> (u16, String) {
    let mut stream = send(url, method, path, body, key);
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

/// POSTs a JSON body; returns the status code and the body.
pub fn post_json(url: &str, path: &str, body: &serde_json::Value) -> (u16, String) {
    http(url, "POST", path, &body.to_string())
}

/// Runs `helixflow ARGS --data-dir DIR` on the default store of `data_dir` (no database named
/// by the environment).
pub fn cli(data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_helixflow"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("DATABASE_TYPE")
        .env_remove("DATABASE_PATH")
        .output()
        .expect("the binary runs")
}

/// The standard output of a command that must have succeeded (else its standard error).
pub fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A gRPC request carrying `Authorization: Bearer <key>`.
pub fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {key}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

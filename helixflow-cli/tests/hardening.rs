//! Issue 19's findings on the real binary: a first start on a fresh machine, secrets at rest,
//! connection limits and timeouts, keep-alive after a refusal, and streams at the end of a
//! shutdown's grace period.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the default models are cached, so that a test with another `HOME` finds them.
fn model_cache() -> String {
    std::env::var("HELIXFLOW_HOME").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap();
        let base = std::env::var("XDG_CACHE_HOME").unwrap_or_else(|_| format!("{home}/.cache"));
        format!("{base}/helixflow")
    })
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[test]
fn the_first_start_on_a_fresh_machine_makes_a_private_data_directory() {
    use std::os::unix::fs::PermissionsExt;

    let home = tempfile::tempdir().unwrap();
    let share = home.path().join(".local/share");
    let env = [
        ("HOME", home.path().to_str().unwrap().to_string()),
        ("XDG_DATA_HOME", share.to_str().unwrap().to_string()),
        ("HELIXFLOW_HOME", model_cache()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The README's first command, less the TLS and gRPC it needs no test for: no
    // --data-dir, in a home where ~/.local/share does not exist yet.
    let server = common::Server::spawn_with_env(
        &["--no-tls", "--no-grpc", "--model", "smollm2-135m-instruct"],
        &env,
    );
    let data: PathBuf = share.join("helixflow");
    assert_eq!(mode(&data), 0o700);
    for file in ["helixflow.db", "token-secret", "admin-key"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert!(server.stop().success());
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }

    // Found loose (another tool, an old version): tightened, with a warning.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = data.join("helixflow.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_helixflow"))
        .args(["keys", "list"])
        .envs(env.iter().copied())
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("helixflow.db") && stderr.contains("private"),
        "{stderr}"
    );
    assert_eq!((mode(&data), mode(&db)), (0o700, 0o600));

    // Another CLI command on a fresh home makes the directory too.
    let other = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_helixflow"))
        .args(["db", "migrate"])
        .env("HOME", other.path())
        .env("XDG_DATA_HOME", other.path().join("share"))
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&other.path().join("share/helixflow")), 0o700);
}

/// Whether the server closed `stream` within `within` (a read sees the end or an error).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
    }
}

#[test]
fn connections_are_capped_and_idle_or_slow_ones_closed() {
    let server = common::Server::spawn(&[
        "--no-tls",
        "--no-grpc",
        "--model",
        "smollm2-135m-instruct",
        "--max-connections",
        "3",
        "--idle-timeout-seconds",
        "1",
    ]);
    let host = server.url.strip_prefix("http://").unwrap().to_string();
    // Three idle connections and one sending its headers a byte at a time take every place.
    let mut idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&host).unwrap()).collect();
    let mut slow = TcpStream::connect(&host).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHo").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // The next is closed at once.
    let mut refused = TcpStream::connect(&host).unwrap();
    assert!(closed_within(&mut refused, Duration::from_millis(500)));
    // Within the timeout (and a margin), the idle and the slow ones are closed...
    let started = Instant::now();
    for stream in idle.iter_mut().chain([&mut slow]) {
        assert!(closed_within(stream, Duration::from_secs(5)));
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // ...and the server answers again.
    let (status, _) = common::http(&server.url, "GET", "/health", "");
    assert_eq!(status, 200);
}

/// Reads one HTTP/1.1 response with a `Content-Length` body; the status and the body.
fn read_response(reader: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line[9..12].parse().unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

#[test]
fn a_refused_request_keeps_its_keep_alive_connection() {
    let server = common::Server::spawn(&[
        "--no-tls",
        "--no-grpc",
        "--model",
        "smollm2-135m-instruct",
        "--api-key",
        "right",
    ]);
    let host = server.url.strip_prefix("http://").unwrap();
    let stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    // A sizeable body, so that an unread one would be left on the connection.
    let body = serde_json::json!({
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": "x".repeat(200_000)}],
    })
    .to_string();
    // A wrong key, an unknown route, a wrong method, then a request that is read and refused
    // by the handler: each answered in the API's shape, on the same connection.
    let cases = [
        ("POST", "/v1/chat/completions", "Bearer wrong", 401),
        ("POST", "/v1/no-such-route", "Bearer right", 404),
        ("DELETE", "/v1/chat/completions", "Bearer right", 405),
        ("POST", "/v1/chat/completions", "bearer right", 400),
    ];
    for (method, path, scheme, expected) in cases {
        write!(
            writer,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {scheme}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let (status, answer) = read_response(&mut reader);
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(status, expected, "{method} {path} {scheme}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
    // The same connection still serves.
    write!(writer, "GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut reader).0, 200);
}

#[test]
fn streams_still_running_at_the_grace_limit_end_with_a_shutdown_error() {
    let data = tempfile::tempdir().unwrap();
    let server = common::Server::spawn_with_env(
        &[
            "--no-tls",
            "--no-grpc",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--model",
            "smollm2-135m-instruct",
            "--grace-seconds",
            "1",
        ],
        &[],
    );
    let admin = std::fs::read_to_string(data.path().join("admin-key")).unwrap();
    let body = serde_json::json!({
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 4000, "ignore_eos": true, "stream": true,
    })
    .to_string();
    let stream = common::send(
        &server.url,
        "POST",
        "/v1/chat/completions",
        &body,
        Some(admin.trim()),
    );
    let mut reader = BufReader::new(stream);
    let mut seen = String::new();
    while seen.matches("data: ").count() < 5 {
        reader.read_line(&mut seen).unwrap();
    }
    let status = server.stop();
    assert!(status.success());
    reader.read_to_string(&mut seen).unwrap();
    let payloads: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    let last_two = &payloads[payloads.len() - 2..];
    assert_eq!(last_two[1], "[DONE]", "{seen}");
    let error: serde_json::Value = serde_json::from_str(last_two[0]).unwrap();
    assert_eq!(error["error"]["code"], "server_shutting_down", "{error}");
    let records = common::ok(&common::cli(
        data.path(),
        &["usage", "--records", "--json", "--limit", "10"],
    ));
    let records: serde_json::Value = serde_json::from_str(&records).unwrap();
    let record = &records.as_array().unwrap()[0];
    assert_eq!(record["status"], 503, "{record}");
    assert_eq!(record["cancelled"], false, "{record}");
}

#[test]
fn a_burst_of_large_prompts_leaves_health_answering() {
    let server =
        common::Server::spawn(&["--no-tls", "--no-grpc", "--model", "smollm2-135m-instruct"]);
    // Eight 1.5 MB prompts: each is tokenised (then refused: far past the context).
    let prompt = "The quick brown fox jumps over the lazy dog. ".repeat(33_000);
    let body =
        serde_json::json!({"model": "smollm2-135m-instruct", "prompt": prompt, "max_tokens": 1})
            .to_string();
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let (url, body) = (server.url.clone(), body.clone());
            std::thread::spawn(move || common::http(&url, "POST", "/v1/completions", &body))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Health is served by the async threads, which no tokenisation occupies.
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(common::http(&server.url, "GET", "/health", "").0, 200);
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    for sender in senders {
        let (status, answer) = sender.join().unwrap();
        assert_eq!(status, 400, "{answer}");
    }
    // A generous bound: before, a burst like this stalled health for many seconds.
    assert!(slowest < Duration::from_secs(3), "{slowest:?}");
}

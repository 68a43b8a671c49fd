//! `helixflow bench --serve URL`: the serving sweep over HTTP, in the style of vLLM's
//! `benchmark_serving`. Each concurrent client holds one keep-alive HTTP/1.1 connection and
//! sends streaming `POST /v1/completions` requests on it, one after another.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::sweep::{self, Level, RequestClock, RequestTimes, Workload};
use crate::args::BenchArgs;

/// One client's connection.
type Connection = SendRequest<Full<Bytes>>;

/// Runs the sweep against the server at `url`.
pub fn run(args: &BenchArgs, url: &str, workload: Workload, streams: &[usize]) -> Result<()> {
    let target = Arc::new(Target::new(args, url)?);
    // One thread is plenty for the clients, and leaves the cores to a server on this machine.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Checks the server and the model, and warms the server up before anything is timed.
    runtime.block_on(async {
        let mut connection = target.connect().await?;
        target
            .request(&mut connection, workload.prompt(0, 0, 0), 4)
            .await
    })?;
    let about = json!({"mode": "http", "url": target.url, "model": target.model});
    sweep::report(about, &workload, streams, args.json, |i, n| {
        runtime.block_on(level(&target, workload, i, n))
    })
}

/// Level `index`: `streams` clients, connected before the clock starts.
async fn level(
    target: &Arc<Target>,
    workload: Workload,
    index: usize,
    streams: usize,
) -> Result<Level> {
    let mut connections = Vec::with_capacity(streams);
    for _ in 0..streams {
        connections.push(target.connect().await?);
    }
    let start = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for (stream, mut connection) in connections.into_iter().enumerate() {
        let target = target.clone();
        clients.spawn(async move {
            let mut times = Vec::with_capacity(workload.requests_per_stream);
            for r in 0..workload.requests_per_stream {
                let prompt = workload.prompt(index, stream, r);
                times.push(
                    target
                        .request(&mut connection, prompt, workload.gen_tokens)
                        .await?,
                );
            }
            anyhow::Ok(times)
        });
    }
    let mut requests = Vec::new();
    while let Some(client) = clients.join_next().await {
        requests.extend(client.context("a client task failed")??);
    }
    Ok(Level::new(streams, &requests, start.elapsed(), None))
}

/// The server and how to talk to it.
struct Target {
    /// The URL as given, without a trailing `/` or `/v1`.
    url: String,
    /// `host:port` for the `Host` header.
    authority: String,
    host: String,
    port: u16,
    /// The path the `/v1` routes sit under (usually empty).
    base_path: String,
    /// Set for `https://`.
    tls: Option<TlsConnector>,
    api_key: Option<String>,
    model: String,
}

impl Target {
    fn new(args: &BenchArgs, url: &str) -> Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("`{url}` is not a URL"))?;
        let (tls, default_port) = match uri.scheme_str() {
            Some("http") => (None, 80),
            Some("https") => (Some(tls_connector(args.cacert.as_deref())?), 443),
            _ => bail!("`{url}` must start with http:// or https://"),
        };
        let (Some(authority), Some(host)) = (uri.authority(), uri.host()) else {
            bail!("`{url}` names no host");
        };
        let base_path = uri.path().trim_end_matches('/');
        let base_path = base_path.strip_suffix("/v1").unwrap_or(base_path);
        Ok(Self {
            url: format!(
                "{}://{authority}{base_path}",
                uri.scheme_str().unwrap_or("")
            ),
            authority: authority.to_string(),
            // IPv6 literals come in brackets.
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: uri.port_u16().unwrap_or(default_port),
            base_path: base_path.to_string(),
            tls,
            api_key: args.api_key.clone().filter(|k| !k.is_empty()),
            model: args.model.clone(),
        })
    }

    /// Opens a connection (TCP, then TLS for https).
    async fn connect(&self) -> Result<Connection> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("connecting to {}", self.authority))?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => handshake(tcp).await,
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone())
                    .with_context(|| format!("`{}` is not a valid TLS name", self.host))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {}", self.authority))?;
                handshake(stream).await
            }
        }
    }

    /// Sends one streaming completion request of `prompt` for exactly `gen_tokens` tokens and
    /// times its chunks.
    async fn request(
        &self,
        connection: &mut Connection,
        prompt: Vec<u32>,
        gen_tokens: usize,
    ) -> Result<RequestTimes> {
        let body = json!({
            "model": self.model,
            "prompt": prompt,
            "max_tokens": gen_tokens,
            "temperature": 0,
            "stream": true,
            "stream_options": {"include_usage": true},
            "ignore_eos": true,
        });
        let path = format!("{}/v1/completions", self.base_path);
        let mut request = Request::post(path.as_str())
            .header(HOST, &self.authority)
            .header(CONTENT_TYPE, "application/json");
        if let Some(key) = &self.api_key {
            request = request.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        let request = request.body(Full::new(Bytes::from(body.to_string())))?;
        let endpoint = format!("POST {}/v1/completions", self.url);
        connection
            .ready()
            .await
            .with_context(|| format!("{endpoint}: the connection closed"))?;
        let clock = RequestClock::start();
        let response = connection
            .send_request(request)
            .await
            .with_context(|| endpoint.clone())?;
        let status = response.status();
        let mut body = response.into_body();
        if status != StatusCode::OK {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            bail!("{endpoint}: {status}: {}", error_message(&bytes));
        }
        let mut stream = Stream::new(clock);
        let mut events = SseParser::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.with_context(|| format!("{endpoint}: reading the stream"))?;
            let at = Instant::now();
            if let Ok(bytes) = frame.into_data() {
                for data in events.feed(&bytes) {
                    stream.event(&data, at).with_context(|| endpoint.clone())?;
                }
            }
        }
        stream.finish(gen_tokens).with_context(|| endpoint.clone())
    }
}

/// An HTTP/1.1 connection over `io`, driven by a task of its own.
async fn handshake<S>(io: S) -> Result<Connection>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        // Its errors reach the request that is waiting on it.
        let _ = connection.await;
    });
    Ok(sender)
}

/// TLS that trusts the certificates in `cacert`, or else the Mozilla roots.
fn tls_connector(cacert: Option<&Path>) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    match cacert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("reading {}", path.display()))?;
            if certs.is_empty() {
                bail!("{} holds no PEM certificate", path.display());
            }
            for cert in certs {
                roots
                    .add(cert)
                    .with_context(|| format!("a certificate of {}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The message of an OpenAI error body, or the body itself.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

/// What a request's event stream has shown so far.
struct Stream {
    clock: RequestClock,
    completion_tokens: Option<usize>,
    done: bool,
}

impl Stream {
    fn new(clock: RequestClock) -> Self {
        Self {
            clock,
            completion_tokens: None,
            done: false,
        }
    }

    /// One event's `data`, received at `at`: a chunk with a choice is content (its text, or
    /// the finish reason), the usage chunk gives the token count, `[DONE]` ends the stream.
    fn event(&mut self, data: &str, at: Instant) -> Result<()> {
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let value: Value = serde_json::from_str(data)
            .with_context(|| format!("a stream event is not JSON: {data}"))?;
        if let Some(error) = value.get("error") {
            let message = error["message"]
                .as_str()
                .map_or(error.to_string(), str::to_string);
            bail!("the stream failed: {message}");
        }
        if value["choices"].as_array().is_some_and(|c| !c.is_empty()) {
            self.clock.content(at);
        }
        if let Some(tokens) = value["usage"]["completion_tokens"].as_u64() {
            self.completion_tokens = Some(tokens as usize);
        }
        Ok(())
    }

    /// The request's times, once the stream is over.
    fn finish(self, gen_tokens: usize) -> Result<RequestTimes> {
        if !self.done {
            bail!("the stream ended without `data: [DONE]`");
        }
        let Some(tokens) = self.completion_tokens else {
            bail!("the stream had no usage chunk");
        };
        self.clock.finish(tokens, gen_tokens)
    }
}

/// Splits a server-sent event stream into the `data` of its events.
#[derive(Debug, Default)]
struct SseParser {
    /// Bytes of a line not yet complete.
    partial: Vec<u8>,
    /// The `data` lines of the event being read.
    data: Option<String>,
}

impl SseParser {
    /// Takes the next bytes; returns the events they complete.
    fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                events.extend(self.data.take());
            } else if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                }
            }
            // Comments (keep-alives) and other fields are of no interest.
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_may_be_split_anywhere() {
        let stream = b": keep-alive\n\ndata: {\"a\":1}\r\n\r\ndata: x\ndata: y\n\ndata: [DONE]\n\n";
        for split in 0..stream.len() {
            let mut parser = SseParser::default();
            let mut events = parser.feed(&stream[..split]);
            events.extend(parser.feed(&stream[split..]));
            assert_eq!(events, ["{\"a\":1}", "x\ny", "[DONE]"], "split at {split}");
        }
    }

    #[test]
    fn a_stream_needs_done_usage_and_the_asked_token_count() {
        let chunk = r#"{"choices":[{"index":0,"text":"hi","finish_reason":null}]}"#;
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
        let at = Instant::now();
        let run = |events: &[&str], gen_tokens| {
            let mut stream = Stream::new(RequestClock::start());
            for e in events {
                stream.event(e, at)?;
            }
            stream.finish(gen_tokens)
        };
        let times = run(&[chunk, chunk, usage, "[DONE]"], 2).unwrap();
        assert_eq!((times.tokens, times.gaps.len()), (2, 1));
        assert!(run(&[chunk, chunk, usage, "[DONE]"], 3).is_err());
        assert!(run(&[chunk, chunk, "[DONE]"], 2).is_err());
        assert!(run(&[chunk, chunk, usage], 2).is_err());
        let error = run(&[chunk, r#"{"error":{"message":"boom"}}"#], 2).unwrap_err();
        assert!(error.to_string().contains("boom"), "{error}");
    }

    #[test]
    fn urls_name_the_server_and_the_base_path() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let args = Cli::parse_from(["bench"]).bench;
        let target = Target::new(&args, "http://127.0.0.1:8000/v1/").unwrap();
        assert_eq!(target.url, "http://127.0.0.1:8000");
        assert_eq!((target.host.as_str(), target.port), ("127.0.0.1", 8000));
        assert_eq!(target.base_path, "");
        let target = Target::new(&args, "http://[::1]/api").unwrap();
        assert_eq!((target.host.as_str(), target.port), ("::1", 80));
        assert_eq!(target.authority, "[::1]");
        assert_eq!(target.base_path, "/api");
        assert!(Target::new(&args, "ftp://host").is_err());
        assert!(Target::new(&args, "localhost:8000").is_err());
    }
}

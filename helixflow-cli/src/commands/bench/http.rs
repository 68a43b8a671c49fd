//! `helixflow bench --serve URL`: the serving sweep over HTTP, in the style of vLLM's
//! `benchmark_serving`. Each concurrent client holds one keep-alive HTTP/1.1 connection and
//! sends streaming `POST /v1/completions` requests on it, one after another.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use http_body_util::BodyExt;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::sweep::{self, Level, RequestClock, RequestTimes, Workload};
use crate::args::BenchArgs;
use crate::client::{error_message, Connection, Server};

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
    let about = json!({"mode": "http", "url": target.server.url, "model": target.model});
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

/// The server and the model the sweep asks for.
struct Target {
    server: Server,
    model: String,
}

impl Target {
    fn new(args: &BenchArgs, url: &str) -> Result<Self> {
        Ok(Self {
            server: Server::new(url, args.cacert.as_deref(), args.api_key.clone())?,
            model: args.model.clone(),
        })
    }

    async fn connect(&self) -> Result<Connection> {
        self.server.connect().await
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
        let request = self
            .server
            .request("POST", "/v1/completions", Some(&body))?;
        let endpoint = format!("POST {}/v1/completions", self.server.url);
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
}

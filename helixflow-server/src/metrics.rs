//! Prometheus metrics: request counts, token counts, latency histograms, and the engine's
//! queue and KV cache gauges, rendered in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use helixflow_core::engine::EngineStats;

use crate::state::AppState;

/// Latency bucket bounds in seconds, shared by both histograms.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A metric family read from each engine's statistics.
struct EngineFamily {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    value: fn(&EngineStats) -> u64,
}

const fn family(
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    value: fn(&EngineStats) -> u64,
) -> EngineFamily {
    EngineFamily {
        name,
        help,
        kind,
        value,
    }
}

/// The engine figures, labelled by model.
const ENGINE_FAMILIES: [EngineFamily; 10] = [
    family(
        "helixflow_prefix_cache_hits_total",
        "Prompt blocks reused from the prefix cache.",
        "counter",
        |s| s.prefix_cache_hits,
    ),
    family(
        "helixflow_preemptions_total",
        "Requests preempted for lack of KV blocks.",
        "counter",
        |s| s.preemptions,
    ),
    family(
        "helixflow_cancelled_requests_total",
        "Requests cancelled by their client.",
        "counter",
        |s| s.cancelled_requests,
    ),
    family(
        "helixflow_engine_steps_total",
        "Engine steps run.",
        "counter",
        |s| s.steps,
    ),
    family(
        "helixflow_queue_length",
        "Requests waiting for admission.",
        "gauge",
        |s| s.waiting_requests as u64,
    ),
    family(
        "helixflow_running_requests",
        "Requests being generated.",
        "gauge",
        |s| s.running_requests as u64,
    ),
    family(
        "helixflow_running_sequences",
        "Sequences (choices) being generated.",
        "gauge",
        |s| s.running_seqs as u64,
    ),
    family(
        "helixflow_kv_blocks_used",
        "KV cache blocks in use by sequences.",
        "gauge",
        |s| s.kv_blocks_used as u64,
    ),
    family(
        "helixflow_kv_blocks_free",
        "KV cache blocks free (unused cached blocks included).",
        "gauge",
        |s| s.kv_blocks_free as u64,
    ),
    family(
        "helixflow_kv_blocks_cached",
        "KV cache blocks held by the prefix cache.",
        "gauge",
        |s| s.kv_blocks_cached as u64,
    ),
];

/// A fixed-bucket histogram of durations.
#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            let n = count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The server's running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Requests answered, by any route and status.
    pub requests: u64,
    /// Prompt tokens that reached an engine.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
}

/// The server's counters; one per server, shared by the handlers.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    time_to_first_token: Histogram,
    inter_token: Histogram,
}

impl Metrics {
    /// Counts a finished request (the status is known once the response starts).
    pub(crate) fn request(&self, route: &str, status: u16) {
        let mut requests = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *requests.entry((route.to_string(), status)).or_default() += 1;
    }

    /// Counts a prompt that reached the engine.
    pub(crate) fn prompt(&self, tokens: usize) {
        self.prompt_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
    }

    /// Counts a generated token, `since_previous` after the previous one of the request (or
    /// after submission for the first).
    pub(crate) fn token(&self, first: bool, since_previous: Duration) {
        self.completion_tokens.fetch_add(1, Ordering::Relaxed);
        if first {
            self.time_to_first_token.observe(since_previous);
        } else {
            self.inter_token.observe(since_previous);
        }
    }

    /// The running totals.
    pub fn totals(&self) -> Totals {
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .sum();
        Totals {
            requests,
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: self.completion_tokens.load(Ordering::Relaxed),
        }
    }

    /// The exposition text, with each chat model's engine figures labelled by model id.
    pub fn render(&self, engines: &[(&str, EngineStats)]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP helixflow_requests_total HTTP requests by route and status.\n\
             # TYPE helixflow_requests_total counter"
        );
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for ((route, status), n) in requests {
            let _ = writeln!(
                out,
                "helixflow_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let counters = [
            (
                "helixflow_prompt_tokens_total",
                "Prompt tokens submitted.",
                self.prompt_tokens.load(Ordering::Relaxed),
            ),
            (
                "helixflow_completion_tokens_total",
                "Tokens generated.",
                self.completion_tokens.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        for family in ENGINE_FAMILIES {
            let (name, help, kind) = (family.name, family.help, family.kind);
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (model, stats) in engines {
                let value = (family.value)(stats);
                let _ = writeln!(out, "{name}{{model=\"{model}\"}} {value}");
            }
        }
        self.time_to_first_token.render(
            &mut out,
            "helixflow_time_to_first_token_seconds",
            "Time from submission to the first generated token.",
        );
        self.inter_token.render(
            &mut out,
            "helixflow_inter_token_seconds",
            "Time between consecutive generated tokens of a request.",
        );
        out
    }
}

/// Counts every request by matched route and status.
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    state.metrics().request(&route, response.status().as_u16());
    response
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let engines = state.models().engines();
    let engines: Vec<(&str, EngineStats)> = engines
        .iter()
        .map(|e| (e.model().name(), e.stats()))
        .collect();
    let body = state.metrics().render(&engines);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

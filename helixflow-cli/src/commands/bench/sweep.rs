//! What the serving sweeps share, in-process or over HTTP: the workload, the timing of one
//! streamed request, and the report of each concurrency level (a table row or JSON).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

/// What every request of a sweep asks for.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Tokens generated per request (end-of-sequence is ignored, so exactly this many).
    pub gen_tokens: usize,
    /// Requests each stream sends one after another.
    pub requests_per_stream: usize,
    /// Seed of the prompts.
    pub seed: u64,
}

/// Prompt token ids are drawn from this range: ordinary tokens of any common vocabulary
/// (special tokens sit at the very start or past the end of it).
const PROMPT_IDS: std::ops::Range<u64> = 1000..30_000;

impl Workload {
    /// The prompt of request `request` of stream `stream` in level `level` (0 is the warm-up,
    /// then 1, 2, ...): pseudo-random token ids fixed by the seed, the same in either mode, and
    /// distinct between requests so that none finds another's in the prefix cache.
    pub fn prompt(&self, level: usize, stream: usize, request: usize) -> Vec<u32> {
        let mut state = self.seed;
        for part in [level, stream, request] {
            state ^= splitmix64(&mut state) ^ part as u64;
        }
        let span = PROMPT_IDS.end - PROMPT_IDS.start;
        (0..self.prompt_tokens)
            .map(|_| (PROMPT_IDS.start + splitmix64(&mut state) % span) as u32)
            .collect()
    }

    /// The sweep's settings as JSON fields.
    fn json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "gen_tokens": self.gen_tokens,
            "requests_per_stream": self.requests_per_stream,
            "seed": self.seed,
        })
    }
}

/// One step of the SplitMix64 generator.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Times one streamed request: started when it is sent, then told of each content chunk
/// (a token, or a few, with text).
#[derive(Debug)]
pub struct RequestClock {
    sent: Instant,
    first: Option<Duration>,
    last: Instant,
    gaps: Vec<Duration>,
}

impl RequestClock {
    /// Starts timing now.
    pub fn start() -> Self {
        let now = Instant::now();
        Self {
            sent: now,
            first: None,
            last: now,
            gaps: Vec::new(),
        }
    }

    /// A chunk of content arrived at `at`.
    pub fn content(&mut self, at: Instant) {
        if self.first.is_none() {
            self.first = Some(at - self.sent);
        } else {
            self.gaps.push(at - self.last);
        }
        self.last = at;
    }

    /// The request ended having generated `tokens`, which must be `expected`.
    pub fn finish(self, tokens: usize, expected: usize) -> Result<RequestTimes> {
        if tokens != expected {
            bail!("a request generated {tokens} tokens instead of {expected}");
        }
        let Some(first_token) = self.first else {
            bail!("a request generated {tokens} tokens but no text");
        };
        Ok(RequestTimes {
            first_token,
            first_at: self.sent + first_token,
            last_at: self.last,
            gaps: self.gaps,
            tokens,
        })
    }
}

/// What one request saw.
#[derive(Debug)]
pub struct RequestTimes {
    /// Time to the first content.
    pub first_token: Duration,
    /// When the first content arrived.
    pub first_at: Instant,
    /// When the last content arrived.
    pub last_at: Instant,
    /// Time between successive content chunks.
    pub gaps: Vec<Duration>,
    /// Tokens generated.
    pub tokens: usize,
}

/// The figures of one concurrency level.
#[derive(Debug)]
pub struct Level {
    streams: usize,
    requests: usize,
    completion_tokens: usize,
    wall_s: f64,
    decode_tokens_per_s: f64,
    ttft_ms: (f64, f64),
    itl_ms: (f64, f64),
    peak_rss_mib: Option<f64>,
}

impl Level {
    /// Sums up the requests of a level of `streams` concurrent streams that took `wall` in
    /// all; `peak_rss_mib` is the benchmark process's peak memory when the engine ran in it.
    pub fn new(
        streams: usize,
        requests: &[RequestTimes],
        wall: Duration,
        peak_rss_mib: Option<f64>,
    ) -> Self {
        let mut ttft: Vec<f64> = requests.iter().map(|r| ms(r.first_token)).collect();
        let mut itl: Vec<f64> = requests
            .iter()
            .flat_map(|r| r.gaps.iter().map(|&g| ms(g)))
            .collect();
        // The decode phase: from the first request's first token to the last one's last.
        let decode_s = match (
            requests.iter().map(|r| r.first_at).min(),
            requests.iter().map(|r| r.last_at).max(),
        ) {
            (Some(first), Some(last)) => (last - first).as_secs_f64(),
            _ => 0.0,
        };
        let after_first: usize = requests.iter().map(|r| r.tokens.saturating_sub(1)).sum();
        Self {
            streams,
            requests: requests.len(),
            completion_tokens: requests.iter().map(|r| r.tokens).sum(),
            wall_s: wall.as_secs_f64(),
            decode_tokens_per_s: if decode_s > 0.0 {
                after_first as f64 / decode_s
            } else {
                0.0
            },
            ttft_ms: (percentile(&mut ttft, 50.0), percentile(&mut ttft, 99.0)),
            itl_ms: (percentile(&mut itl, 50.0), percentile(&mut itl, 99.0)),
            peak_rss_mib,
        }
    }

    fn tokens_per_s(&self) -> f64 {
        self.completion_tokens as f64 / self.wall_s
    }

    fn requests_per_s(&self) -> f64 {
        self.requests as f64 / self.wall_s
    }

    /// The header of [`Level::row`].
    fn header() -> String {
        format!(
            "{:>7} {:>8} {:>10} {:>10} {:>7} {:>10} {:>10} {:>9} {:>9} {:>8}",
            "streams",
            "requests",
            "agg tok/s",
            "dec tok/s",
            "req/s",
            "ttft p50",
            "ttft p99",
            "itl p50",
            "itl p99",
            "peak MiB"
        )
    }

    /// One table row.
    fn row(&self) -> String {
        let peak = self
            .peak_rss_mib
            .map_or_else(|| "-".to_string(), |mib| format!("{mib:.0}"));
        format!(
            "{:>7} {:>8} {:>10.1} {:>10.1} {:>7.2} {:>8.1}ms {:>8.1}ms {:>7.1}ms {:>7.1}ms {:>8}",
            self.streams,
            self.requests,
            self.tokens_per_s(),
            self.decode_tokens_per_s,
            self.requests_per_s(),
            self.ttft_ms.0,
            self.ttft_ms.1,
            self.itl_ms.0,
            self.itl_ms.1,
            peak
        )
    }

    /// The level as JSON (times in milliseconds).
    fn json(&self) -> Value {
        json!({
            "streams": self.streams,
            "requests": self.requests,
            "completion_tokens": self.completion_tokens,
            "wall_s": self.wall_s,
            "output_tokens_per_s": self.tokens_per_s(),
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "requests_per_s": self.requests_per_s(),
            "ttft_ms_p50": self.ttft_ms.0,
            "ttft_ms_p99": self.ttft_ms.1,
            "itl_ms_p50": self.itl_ms.0,
            "itl_ms_p99": self.itl_ms.1,
            "peak_rss_mib": self.peak_rss_mib,
        })
    }
}

/// Runs `level` for each concurrency in `streams` (given the level's number, from 1, and its
/// concurrency) and reports: a table row per level as it
/// finishes, or (with `json`) one JSON object at the end, `about` (mode, model, ...) and the
/// workload's fields followed by `levels`.
pub fn report(
    about: Value,
    workload: &Workload,
    streams: &[usize],
    json: bool,
    mut level: impl FnMut(usize, usize) -> Result<Level>,
) -> Result<()> {
    if !json {
        println!("{}", Level::header());
    }
    let mut levels = Vec::new();
    for (i, &n) in streams.iter().enumerate() {
        if json {
            eprintln!("helixflow bench: {n} concurrent streams");
        }
        let result = level(i + 1, n)?;
        if json {
            levels.push(result.json());
        } else {
            println!("{}", result.row());
        }
    }
    if json {
        let mut out = about;
        out.as_object_mut()
            .expect("`about` is an object")
            .extend(workload.json().as_object().cloned().unwrap_or_default());
        out["levels"] = Value::Array(levels);
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// Checks a sweep's settings.
pub fn validate(workload: &Workload, streams: &[usize]) -> Result<()> {
    if workload.prompt_tokens == 0 || workload.gen_tokens == 0 {
        bail!("--prompt-tokens and --gen-tokens must be at least 1");
    }
    if workload.requests_per_stream == 0 {
        bail!("--requests-per-stream must be at least 1");
    }
    if streams.is_empty() || streams.contains(&0) {
        bail!("--streams must list concurrency levels of at least 1");
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`th percentile (nearest rank) of `values`, 0 for none.
fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), 50.0);
        assert_eq!(percentile(&mut v, 99.0), 99.0);
        assert_eq!(percentile(&mut [7.0], 99.0), 7.0);
        assert_eq!(percentile(&mut [], 50.0), 0.0);
    }

    #[test]
    fn prompts_are_fixed_distinct_and_ordinary() {
        let w = Workload {
            prompt_tokens: 64,
            gen_tokens: 1,
            requests_per_stream: 1,
            seed: 7,
        };
        assert_eq!(w.prompt(2, 1, 0), w.prompt(2, 1, 0));
        assert_ne!(w.prompt(2, 1, 0), w.prompt(2, 2, 0));
        assert_ne!(w.prompt(2, 1, 0), w.prompt(3, 1, 0));
        assert_ne!(w.prompt(2, 1, 0), w.prompt(2, 1, 1));
        assert_ne!(w.prompt(2, 1, 0), Workload { seed: 8, ..w }.prompt(2, 1, 0));
        assert_ne!(w.prompt(0, 1, 2), w.prompt(0, 2, 1));
        assert!(w
            .prompt(1, 0, 0)
            .iter()
            .all(|&id| PROMPT_IDS.contains(&u64::from(id))));
    }
}

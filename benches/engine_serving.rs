//! Drives the engine in-process with N concurrent streams and reports aggregate throughput,
//! time to first token, inter-token latency and peak memory.
//!
//!   cargo run --release -p helixflow-benches --bin engine-serving -- [--streams 1,4,16,64]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use helixflow_core::chat_model::ChatModel;
use helixflow_core::engine::{Engine, EngineConfig, EngineEvent};
use helixflow_core::generation::GenerationParams;
use helixflow_core::source::{self, StderrProgress};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Serving benchmark of the HelixFlow engine")]
struct Args {
    /// Model id or path.
    #[arg(long, default_value = "smollm2-135m-instruct")]
    model: String,
    /// Concurrency levels to run, comma-separated.
    #[arg(long, default_value = "1,4,16,64", value_delimiter = ',')]
    streams: Vec<usize>,
    /// Tokens generated per stream.
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Prompt tokens per stream.
    #[arg(long, default_value_t = 64)]
    prompt_tokens: usize,
    /// The engine's token budget per step.
    #[arg(long, default_value_t = 512)]
    max_batched_tokens: usize,
    /// Print one JSON object per level instead of a table.
    #[arg(long)]
    json: bool,
}

/// What one stream saw.
struct StreamTimes {
    first_token: Duration,
    gaps: Vec<Duration>,
    tokens: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let resolved = source::resolve_arg(&args.model, &StderrProgress)?;
    let chat = Arc::new(
        ChatModel::load_named(&resolved.path, &resolved.name)
            .with_context(|| format!("loading {}", resolved.path.display()))?,
    );
    if !args.json {
        println!(
            "{:>7} {:>12} {:>10} {:>10} {:>10} {:>10} {:>9}",
            "streams", "agg tok/s", "ttft p50", "ttft p99", "itl p50", "itl p99", "peak MiB"
        );
    }
    for &streams in &args.streams {
        run_level(&args, &chat, streams)?;
    }
    Ok(())
}

fn run_level(args: &Args, chat: &Arc<ChatModel>, streams: usize) -> Result<()> {
    let engine = Engine::start(
        chat.clone(),
        EngineConfig {
            max_batched_tokens: args.max_batched_tokens,
            max_num_seqs: streams.max(1),
            queue_capacity: streams.max(1),
            ..Default::default()
        },
    )?;
    let filler = "The history of computing is a story of people who wanted to calculate faster \
                  and more reliably than they could by hand. ";
    let start = Instant::now();
    let mut handles = Vec::new();
    for i in 0..streams {
        // Distinct prompts: no stream benefits from another's prefix cache.
        let mut prompt = chat.tokenizer().encode(&format!("Stream {i}. "), false)?;
        while prompt.len() < args.prompt_tokens {
            prompt.extend(chat.tokenizer().encode(filler, false)?);
        }
        prompt.truncate(args.prompt_tokens);
        let mut params = GenerationParams::greedy(args.gen_tokens);
        params.ignore_eos = true;
        let stream = engine.submit(prompt, params)?;
        handles.push(std::thread::spawn(move || -> Result<StreamTimes> {
            let submitted = Instant::now();
            let mut last = submitted;
            let mut times = StreamTimes {
                first_token: Duration::ZERO,
                gaps: Vec::new(),
                tokens: 0,
            };
            for event in stream {
                match event {
                    EngineEvent::Token { .. } => {
                        let now = Instant::now();
                        if times.tokens == 0 {
                            times.first_token = now - submitted;
                        } else {
                            times.gaps.push(now - last);
                        }
                        last = now;
                        times.tokens += 1;
                    }
                    EngineEvent::Done { .. } => return Ok(times),
                    EngineEvent::Failed(e) => bail!("stream failed: {e}"),
                    EngineEvent::Started { .. } => {}
                }
            }
            bail!("stream ended without Done")
        }));
    }
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.join().expect("stream thread panicked")?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let tokens: usize = results.iter().map(|r| r.tokens).sum();
    let mut ttft: Vec<f64> = results.iter().map(|r| ms(r.first_token)).collect();
    let mut itl: Vec<f64> = results
        .iter()
        .flat_map(|r| r.gaps.iter().map(|&g| ms(g)))
        .collect();
    let throughput = tokens as f64 / elapsed;
    let peak_mib = peak_rss_bytes() as f64 / (1024.0 * 1024.0);
    let (ttft50, ttft99) = (percentile(&mut ttft, 50.0), percentile(&mut ttft, 99.0));
    let (itl50, itl99) = (percentile(&mut itl, 50.0), percentile(&mut itl, 99.0));
    if args.json {
        println!(
            "{}",
            json!({
                "streams": streams,
                "generated_tokens": tokens,
                "aggregate_tokens_per_s": throughput,
                "ttft_ms_p50": ttft50, "ttft_ms_p99": ttft99,
                "itl_ms_p50": itl50, "itl_ms_p99": itl99,
                "peak_rss_mib": peak_mib,
                "engine": format!("{:?}", engine.stats()),
            })
        );
    } else {
        println!(
            "{streams:>7} {throughput:>12.1} {ttft50:>9.1}ms {ttft99:>9.1}ms {itl50:>9.1}ms {itl99:>9.1}ms {peak_mib:>9.0}"
        );
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

/// The process's peak resident memory (VmHWM), 0 where /proc is unavailable.
fn peak_rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let kib = line.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?;
                kib.trim().parse::<usize>().ok()
            })
        })
        .map_or(0, |kib| kib * 1024)
}

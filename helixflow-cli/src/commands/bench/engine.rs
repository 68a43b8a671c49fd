//! `helixflow bench --streams ...`: the serving sweep on an engine in this process, one thread
//! per concurrent stream; the baseline that `--serve` is compared with.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use helixflow_core::engine::{Engine, EngineConfig, EngineEvent, EngineHandle};
use helixflow_core::generation::GenerationParams;
use helixflow_core::structured::{Grammar, GrammarSpec};
use serde_json::json;

use super::sweep::{self, Level, RequestClock, RequestTimes, Workload};
use crate::args::BenchArgs;
use crate::load;

/// Runs the sweep on `args.model`, with the engine configured as `helixflow serve`'s defaults
/// (but for `--max-batched-tokens`).
pub fn run(args: &BenchArgs, workload: Workload, streams: &[usize]) -> Result<()> {
    let chat = Arc::new(load::chat_model_with(&args.model, None, args.quantize)?);
    let context = chat.model().shape().context_length;
    if workload.prompt_tokens + workload.gen_tokens > context {
        bail!("--prompt-tokens + --gen-tokens exceeds the model's context of {context}");
    }
    let most = streams.iter().copied().max().unwrap_or(1);
    let defaults = EngineConfig::default();
    let engine = Engine::start(
        chat.clone(),
        EngineConfig {
            max_batched_tokens: args.max_batched_tokens,
            queue_capacity: defaults.queue_capacity.max(most),
            ..defaults
        },
    )
    .context("starting the engine")?;
    let grammar = match &args.json_schema {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let schema = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            Some(chat.grammar(&GrammarSpec::JsonSchema(schema), "--json-schema")?)
        }
    };
    let grammar = grammar.as_ref();
    // Page the weights in and warm the allocator before anything is timed.
    request(&engine, workload.prompt(0, 0, 0), 4, grammar)?;
    let about = json!({
        "mode": "in-process",
        "model": chat.name(),
        "threads": super::kernel_threads(),
        "block_products": super::block_products(chat.model()),
        "json_schema": args.json_schema,
    });
    sweep::report(about, &workload, streams, args.json, |i, n| {
        level(&engine, &workload, i, n, grammar)
    })
}

/// Level `index`: `streams` threads, each sending its requests one after another.
fn level(
    engine: &EngineHandle,
    workload: &Workload,
    index: usize,
    streams: usize,
    grammar: Option<&Grammar>,
) -> Result<Level> {
    let start = Instant::now();
    let per_stream = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..streams)
            .map(|stream| {
                scope.spawn(move || {
                    (0..workload.requests_per_stream)
                        .map(|r| {
                            let prompt = workload.prompt(index, stream, r);
                            request(engine, prompt, workload.gen_tokens, grammar)
                        })
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a stream thread panicked"))
            .collect::<Result<Vec<_>>>()
    })?;
    let wall = start.elapsed();
    Ok(Level::new(
        streams,
        &per_stream.into_iter().flatten().collect::<Vec<_>>(),
        wall,
        Some(peak_rss_bytes() as f64 / (1024.0 * 1024.0)),
    ))
}

/// One greedy request of exactly `gen_tokens` (held to `grammar`, which must not end it
/// sooner). Like the server's stream, a token counts as content when it has text or ends the
/// request.
fn request(
    engine: &EngineHandle,
    prompt: Vec<u32>,
    gen_tokens: usize,
    grammar: Option<&Grammar>,
) -> Result<RequestTimes> {
    let mut params = GenerationParams::greedy(gen_tokens);
    params.ignore_eos = grammar.is_none();
    params.grammar = grammar.cloned();
    let mut clock = RequestClock::start();
    for event in engine.submit(prompt, params)? {
        match event {
            EngineEvent::Token { output, .. } => {
                if !output.text.is_empty() || output.finish.is_some() {
                    clock.content(Instant::now());
                }
            }
            EngineEvent::Done { completion_tokens } => {
                if grammar.is_some() && completion_tokens < gen_tokens {
                    bail!(
                        "an answer held to --json-schema was complete after {completion_tokens} \
                         tokens, before --gen-tokens {gen_tokens}: give a schema whose answers \
                         are longer (a list with minItems), or fewer --gen-tokens"
                    );
                }
                return clock.finish(completion_tokens, gen_tokens);
            }
            EngineEvent::Failed(e) => bail!("a request failed: {e}"),
            EngineEvent::Started { .. } => {}
        }
    }
    bail!("the engine stopped in the middle of a request")
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

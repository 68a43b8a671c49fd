//! `helixflow bench`: prefill and decode throughput of a chat model, median of several runs;
//! or, with `--streams` or `--serve URL`, a serving sweep over concurrency levels; or, with
//! `--platform`, the cost of authentication, quotas and usage accounting per request; or,
//! with `--embeddings`, an embedding model's sentences per second.

mod embeddings;
mod engine;
mod http;
mod platform;
mod sweep;

use std::time::Instant;

use anyhow::{bail, Result};
use helixflow_core::cpu::packed::Accumulation;
use helixflow_core::models::Logits;
use helixflow_core::models::{CausalLm, SeqStep};
use serde_json::json;

use crate::args::BenchArgs;
use crate::load;

/// Text the benchmark prompt is cut from (any ordinary prose works).
const FILLER: &str = "The history of computing is a story of people who wanted to calculate \
faster and more reliably than they could by hand. Mechanical calculators, punched cards, \
vacuum tubes, transistors and integrated circuits each made machines smaller and cheaper. ";

/// Default concurrency levels of a sweep over HTTP.
const DEFAULT_STREAMS: [usize; 4] = [1, 4, 16, 64];

/// Runs the command.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.platform {
        return platform::run(&args);
    }
    if args.embeddings {
        return embeddings::run(&args);
    }
    if args.serve.is_none() && args.streams.is_empty() {
        return single_stream(&args);
    }
    let streams = if args.streams.is_empty() {
        DEFAULT_STREAMS.to_vec()
    } else {
        args.streams.clone()
    };
    let workload = sweep::Workload {
        prompt_tokens: args.prompt_tokens.unwrap_or(64),
        gen_tokens: args.gen_tokens,
        requests_per_stream: args.requests_per_stream,
        seed: args.seed.unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(0, |d| d.as_nanos() as u64)
        }),
    };
    sweep::validate(&workload, &streams)?;
    match &args.serve {
        Some(url) => http::run(&args, url, workload, &streams),
        None => engine::run(&args, workload, &streams),
    }
}

/// Prefill and decode rates of one sequence, straight on the model.
fn single_stream(args: &BenchArgs) -> Result<()> {
    let prompt_tokens = args.prompt_tokens.unwrap_or(512);
    if prompt_tokens == 0 || args.gen_tokens == 0 || args.runs == 0 {
        bail!("--prompt-tokens, --gen-tokens and --runs must be at least 1");
    }
    let chat = load::chat_model_with(&args.model, None, args.quantize)?;
    let model = chat.model();
    let context = model.shape().context_length;
    if prompt_tokens + args.gen_tokens > context {
        bail!("--prompt-tokens + --gen-tokens exceeds the model's context of {context}");
    }
    let mut prompt = Vec::new();
    while prompt.len() < prompt_tokens {
        prompt.extend(chat.tokenizer().encode(FILLER, false)?);
    }
    prompt.truncate(prompt_tokens);

    // Page the weights in and warm the allocator before anything is timed.
    let warm_up = &prompt[..prompt.len().min(8)];
    model.forward(&mut [SeqStep {
        tokens: warm_up,
        kv: &mut model.new_kv_state(),
        prompt_len: warm_up.len(),
    }])?;
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    let mut logits = Logits::new();
    for _ in 0..args.runs {
        let mut kv = model.new_kv_state();
        let start = Instant::now();
        let step = SeqStep {
            tokens: &prompt,
            kv: &mut kv,
            prompt_len: prompt.len(),
        };
        model.forward_into(&mut [step], &mut logits)?;
        prefill.push(prompt.len() as f64 / start.elapsed().as_secs_f64());

        let mut next = argmax(logits.row(0));
        let start = Instant::now();
        for _ in 0..args.gen_tokens {
            let step = SeqStep {
                tokens: &[next],
                kv: &mut kv,
                prompt_len: prompt.len(),
            };
            model.forward_into(&mut [step], &mut logits)?;
            next = argmax(logits.row(0));
        }
        decode.push(args.gen_tokens as f64 / start.elapsed().as_secs_f64());
    }
    let (prefill, decode) = (median(&mut prefill), median(&mut decode));
    if args.json {
        let out = json!({
            "model": chat.name(),
            "prompt_tokens": prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "runs": args.runs,
            "threads": kernel_threads(),
            "block_products": block_products(model),
            "prefill_tokens_per_s": prefill,
            "decode_tokens_per_s": decode,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("model:   {}", chat.name());
        println!("prefill: {prefill:8.1} tokens/s ({prompt_tokens} prompt tokens)");
        println!(
            "decode:  {decode:8.1} tokens/s ({} tokens after the prompt)",
            args.gen_tokens
        );
        println!("median of {} runs, {} threads", args.runs, kernel_threads());
    }
    Ok(())
}

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0 as u32
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Whether the model adds up its packed products in block order (`HELIXFLOW_BLOCK_PRODUCTS`),
/// not llama.cpp's.
pub(crate) fn block_products(model: &dyn CausalLm) -> bool {
    model.products() == Accumulation::Blocks
}

/// The threads of the kernels' parallel loops (`HELIXFLOW_NUM_THREADS`, else the CPUs).
pub(crate) fn kernel_threads() -> usize {
    helixflow_core::cpu::pool::Pool::global().threads()
}

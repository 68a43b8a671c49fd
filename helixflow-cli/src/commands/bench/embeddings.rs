//! `helixflow bench --embeddings`: sentences per second of an embedding model for batches of
//! 1, 8 and 32 short and 256-token inputs (median of `--runs`), and the arithmetic rate that
//! makes (multiply-adds of the encoder's matrices and attention, counted from its config).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use helixflow_core::embeddings::EmbeddingInput;
use serde_json::{json, Value};

use super::{median, FILLER};
use crate::args::{BenchArgs, DEFAULT_CHAT_MODEL, DEFAULT_EMBEDDING_MODEL};
use crate::load;

/// The batch sizes measured.
const BATCHES: [usize; 3] = [1, 8, 32];

/// A short input: a sentence of a dozen tokens.
const SHORT: &str = "The weather is lovely today and the park is full of people.";

/// The encoder's shape, as far as its arithmetic goes.
struct Shape {
    layers: usize,
    hidden: usize,
    intermediate: usize,
}

impl Shape {
    fn read(folder: &Path) -> Result<Self> {
        let path = folder.join("config.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let config: Value = serde_json::from_str(&text)?;
        let field = |name: &str| {
            config[name]
                .as_u64()
                .map(|n| n as usize)
                .with_context(|| format!("{} has no {name}", path.display()))
        };
        Ok(Self {
            layers: field("num_hidden_layers")?,
            hidden: field("hidden_size")?,
            intermediate: field("intermediate_size")?,
        })
    }

    /// Floating-point operations of encoding one sequence of `n` tokens: per layer the four
    /// attention projections, the two feed-forward matrices, and the scores and their
    /// weighted sum.
    fn flops(&self, n: usize) -> f64 {
        let (n, h, i) = (n as f64, self.hidden as f64, self.intermediate as f64);
        let macs = 4.0 * n * h * h + 2.0 * n * h * i + 2.0 * n * n * h;
        2.0 * macs * self.layers as f64
    }
}

/// Runs the benchmark.
pub fn run(args: &BenchArgs) -> Result<()> {
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    let id = if args.model == DEFAULT_CHAT_MODEL {
        DEFAULT_EMBEDDING_MODEL
    } else {
        &args.model
    };
    let resolved = load::resolve(id)?;
    let shape = Shape::read(&resolved.path)?;
    let model = load::embedding_model(id)?;
    let long_tokens = 256.min(model.max_seq_len());
    let mut long_text = String::new();
    while model.tokenize(&long_text)?.len() < long_tokens {
        long_text.push_str(FILLER);
    }
    let inputs = [("short", SHORT.to_string()), ("long", long_text)];
    // Page the weights in before anything is timed.
    model.embed(&[SHORT])?;
    let mut results = Vec::new();
    for (kind, text) in &inputs {
        for batch in BATCHES {
            let texts = EmbeddingInput::Texts(vec![text.clone(); batch]);
            let sequences = model.prepare_request(texts, true)?;
            let tokens: usize = sequences.iter().map(Vec::len).sum();
            let mut rates = Vec::with_capacity(args.runs);
            for _ in 0..args.runs {
                let start = Instant::now();
                model.embed_prepared(&sequences, &|| false)?;
                rates.push(batch as f64 / start.elapsed().as_secs_f64());
            }
            let sentences = median(&mut rates);
            let per_sentence = tokens / batch;
            let gflops = sentences * shape.flops(per_sentence) / 1e9;
            results.push(json!({
                "input": kind,
                "tokens_per_input": per_sentence,
                "batch": batch,
                "sentences_per_s": sentences,
                "tokens_per_s": sentences * per_sentence as f64,
                "gflops": gflops,
            }));
        }
    }
    if args.json {
        let out = json!({"model": model.name(), "runs": args.runs,
            "threads": super::kernel_threads(), "results": results});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("model: {}", model.name());
        println!(
            "{:<6} {:>7} {:>6} {:>12} {:>12} {:>9}",
            "INPUT", "TOKENS", "BATCH", "SENTENCES/S", "TOKENS/S", "GFLOP/S"
        );
        for r in &results {
            println!(
                "{:<6} {:>7} {:>6} {:>12.1} {:>12.0} {:>9.1}",
                r["input"].as_str().unwrap_or(""),
                r["tokens_per_input"].as_u64().unwrap_or(0),
                r["batch"].as_u64().unwrap_or(0),
                r["sentences_per_s"].as_f64().unwrap_or(0.0),
                r["tokens_per_s"].as_f64().unwrap_or(0.0),
                r["gflops"].as_f64().unwrap_or(0.0)
            );
        }
        println!(
            "median of {} runs, {} threads",
            args.runs,
            super::kernel_threads()
        );
    }
    Ok(())
}

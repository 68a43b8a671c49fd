//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// HelixFlow: fast inference of language and embedding models.
#[derive(Debug, Parser)]
#[command(name = "helixflow", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Answer one prompt (or a conversation) with a chat model, streaming the reply.
    Run(RunArgs),
    /// Print embedding vectors of texts as JSON.
    Embed(EmbedArgs),
    /// Download and list models.
    Models(ModelsArgs),
    /// Measure prefill and decode speed.
    Bench(BenchArgs),
}

/// Default chat model.
pub const DEFAULT_CHAT_MODEL: &str = "smollm2-135m-instruct";
/// Default embedding model.
pub const DEFAULT_EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

/// `helixflow run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Model id (built-in or hub `org/name[:file.gguf]`) or path to a GGUF file.
    #[arg(long, short, default_value = DEFAULT_CHAT_MODEL, env = "HELIXFLOW_MODEL")]
    pub model: String,
    /// A system message to put first.
    #[arg(long)]
    pub system: Option<String>,
    /// A JSON file with an array of OpenAI chat messages, used instead of PROMPT.
    #[arg(long, conflicts_with = "prompt")]
    pub messages: Option<PathBuf>,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Random seed: the same seed and request give the same reply.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop when this string is generated (may repeat).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Print one OpenAI `chat.completion` JSON object instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// The user's message; `-` reads it from standard input.
    pub prompt: Option<String>,
}

/// `helixflow embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Embedding model id or path to a sentence-transformers folder.
    #[arg(long, short, default_value = DEFAULT_EMBEDDING_MODEL)]
    pub model: String,
    /// Texts to embed.
    #[arg(required = true)]
    pub texts: Vec<String>,
}

/// `helixflow models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// What to do with models.
    #[command(subcommand)]
    pub command: ModelsCommand,
}

/// `helixflow models ...`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download a model into the cache (and verify it).
    Pull {
        /// Model id: a built-in id or a hub `org/name[:file.gguf]`.
        id: String,
    },
    /// List the models in the cache, with their sizes.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `helixflow bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Chat model id or GGUF path.
    #[arg(long, short, default_value = DEFAULT_CHAT_MODEL)]
    pub model: String,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Tokens to decode for the decode measurement.
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use helixflow_core::models::LoadQuantization;
use helixflow_core::registry::KeepAlive;

/// `--keep-alive`.
fn parse_keep_alive(text: &str) -> Result<KeepAlive, String> {
    KeepAlive::parse(text).map_err(|e| e.to_string())
}

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
    /// Download, list, remove models; load and unload them in a running server.
    Models(ModelsArgs),
    /// Download a model into the cache and verify it (`models pull`).
    Pull {
        /// Model id: a built-in id or a hub `org/name[:file.gguf]`.
        id: String,
    },
    /// List the models in the cache (`models list`).
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The models of a running server: loaded or not, their memory, when last used
    /// (`models ps`).
    Ps {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove a model from the cache (`models rm`).
    Rm {
        /// Model id, as `ls` lists it.
        id: String,
    },
    /// Measure prefill and decode speed, or serving throughput and latency (--streams, --serve).
    Bench(BenchArgs),
    /// Serve the OpenAI-compatible API over HTTPS (HTTP with --no-tls).
    Serve(ServeArgs),
    /// Create, list and revoke API keys; the default limits of new keys.
    Keys(KeysArgs),
    /// Create, list and disable users (who log in for access tokens).
    Users(UsersArgs),
    /// Usage reports: requests and tokens by key, model and day, or the requests themselves.
    Usage(UsageArgs),
    /// Manage the platform database.
    Db(DbArgs),
}

/// Which store the platform commands use: `DATABASE_URL` (or `DATABASE_TYPE` with
/// `DATABASE_PATH`/`DATABASE_URL`), else `helixflow.db` in the data directory.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The data directory (as for `serve`); default: the user's data directory.
    #[arg(long, env = "HELIXFLOW_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

/// `helixflow keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// What to do with keys.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// `helixflow keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key and print it (once: only its hash is stored).
    Create {
        /// A name for the key.
        #[arg(long)]
        name: String,
        /// Who the key belongs to.
        #[arg(long)]
        owner: Option<String>,
        /// Scopes, comma-separated: inference, admin.
        #[arg(long, value_delimiter = ',', default_value = "inference")]
        scopes: Vec<String>,
        /// Models the key may use, comma-separated; default: all.
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u64>,
        /// Tokens per minute.
        #[arg(long)]
        tpm: Option<u64>,
        /// Tokens per --period.
        #[arg(long, requires = "period")]
        budget: Option<u64>,
        /// The budget's period: day or month.
        #[arg(long, requires = "budget")]
        period: Option<String>,
        /// Expire after this long: 30d, 12h, 15m, 45s.
        #[arg(long)]
        expires_in: Option<String>,
        /// No limits at all: the default limits for new keys (`keys defaults`) do not apply.
        #[arg(long, conflicts_with_all = ["rpm", "tpm", "budget", "period"])]
        unlimited: bool,
        /// Print one JSON object (with `id` and `key`).
        #[arg(long)]
        json: bool,
    },
    /// List the keys (never their secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id: refused from then on.
    Revoke {
        /// The key's id (`key_...`).
        id: String,
    },
    /// Show the limits new keys get for each limit they leave unset; with flags, change them
    /// (keys already made keep theirs).
    Defaults {
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u64>,
        /// Tokens per minute.
        #[arg(long)]
        tpm: Option<u64>,
        /// Tokens per --period.
        #[arg(long, requires = "period")]
        budget: Option<u64>,
        /// The budget's period: day or month.
        #[arg(long, requires = "budget")]
        period: Option<String>,
        /// Remove every default first (the flags given with it are kept).
        #[arg(long)]
        clear: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `helixflow usage`: the store's usage records, with the server running or not.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Group the totals by key, model and/or day (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "day,model")]
    pub group_by: Vec<String>,
    /// From this long ago: 30d, 12h, 15m, 45s.
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// Only this key's requests (`key_...`).
    #[arg(long)]
    pub key: Option<String>,
    /// Only this user's requests.
    #[arg(long)]
    pub user: Option<String>,
    /// The requests themselves, newest first, instead of totals.
    #[arg(long)]
    pub records: bool,
    /// The most requests --records prints.
    #[arg(long, default_value_t = 100, requires = "records")]
    pub limit: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `helixflow users`.
#[derive(Debug, Args)]
pub struct UsersArgs {
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// What to do with users.
    #[command(subcommand)]
    pub command: UsersCommand,
}

/// `helixflow users ...`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Make a user. The password comes from standard input with --password-stdin, else from
    /// HELIXFLOW_USER_PASSWORD; never from an argument, where other users could see it.
    Create {
        /// The name they log in with: 1 to 64 of A-Z a-z 0-9 _ . @ -.
        #[arg(long)]
        username: String,
        /// Scopes, comma-separated: inference, admin.
        #[arg(long, value_delimiter = ',', default_value = "inference")]
        scopes: Vec<String>,
        /// Read the password from standard input (its first line).
        #[arg(long)]
        password_stdin: bool,
        /// Print the user as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the users (never their password hashes).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Disable a user by id or username: logins fail and their access tokens are refused.
    Disable {
        /// The user's id (`usr_...`) or username.
        user: String,
    },
}

/// `helixflow db`.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: DbCommand,
}

/// `helixflow db ...`.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply the migrations the database lacks (serve does this at start-up too).
    Migrate,
}

/// Default chat model.
pub const DEFAULT_CHAT_MODEL: &str = "smollm2-135m-instruct";
/// Default embedding model.
pub const DEFAULT_EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

/// `helixflow run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Model id (built-in or hub `org/name[:file.gguf]`) or path to a GGUF file; it may also
    /// come first among the words, as `helixflow run MODEL [PROMPT]`.
    #[arg(long, short, env = "HELIXFLOW_MODEL")]
    pub model: Option<String>,
    /// A system message to put first.
    #[arg(long)]
    pub system: Option<String>,
    /// A JSON file with an array of OpenAI chat messages, used instead of PROMPT.
    #[arg(long, conflicts_with = "words")]
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
    /// A Jinja chat template file to use in place of the model's own (for a base model
    /// without one, such as gemma-3-270m).
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<PathBuf>,
    /// Quantise a safetensors chat model's matrices at load to `q8_0` or `q4_0`, so that the
    /// packed kernels serve it (a GGUF keeps its own formats).
    #[arg(long, value_name = "q8_0|q4_0")]
    pub quantize: Option<LoadQuantization>,
    /// Chat in the shell, turn by turn, even when standard input is not a terminal (it is
    /// the default on a terminal without a prompt).
    #[arg(long, short, conflicts_with_all = ["messages", "json"])]
    pub interactive: bool,
    /// `[MODEL] [PROMPT]`: the model (a built-in id or a GGUF path, unless --model names
    /// one), then the user's message (`-` reads it from standard input); without a prompt on
    /// a terminal, a chat.
    #[arg(value_name = "MODEL] [PROMPT")]
    pub words: Vec<String>,
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
    /// Remove a model from the cache.
    Rm {
        /// Model id, as `list` lists it.
        id: String,
    },
    /// Load a model into a running server (if it is not loaded) and start its keep-alive.
    Load {
        /// The model's id, as requests name it.
        id: String,
        /// How long it stays once idle: 5m, 30s, 0, -1 (until unloaded); default: the
        /// server's --keep-alive.
        #[arg(long)]
        keep_alive: Option<String>,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Unload a model from a running server (now, or when its requests in flight end).
    Unload {
        /// The model's id.
        id: String,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The models of a running server: loaded or not, their memory, when last used.
    Ps {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// A running server and the admin key to call it with.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The server's URL.
    #[arg(
        long,
        default_value = "https://127.0.0.1:8443",
        env = "HELIXFLOW_SERVER"
    )]
    pub server: String,
    /// A key with the admin scope; default: the `admin-key` file in the data directory.
    #[arg(long, env = "HELIXFLOW_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// A PEM file of the certificates to trust; default: the server's self-signed
    /// certificate in the data directory, where there is one.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// The server's data directory (as for `serve`).
    #[arg(long, env = "HELIXFLOW_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `helixflow bench`: single-stream prefill and decode rates by default; with `--streams`, a
/// serving sweep of the in-process engine; with `--serve URL`, the same sweep over HTTP.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Chat model id, GGUF path or safetensors folder (with --serve: the model id the server
    /// serves).
    #[arg(long, short, default_value = DEFAULT_CHAT_MODEL)]
    pub model: String,
    /// Quantise a safetensors chat model's matrices at load to `q8_0` or `q4_0`.
    #[arg(long, value_name = "q8_0|q4_0")]
    pub quantize: Option<LoadQuantization>,
    /// Prompt length [default: 512 for the single-stream benchmark, 64 for serving sweeps].
    #[arg(long)]
    pub prompt_tokens: Option<usize>,
    /// Tokens to generate (per request in serving sweeps).
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Repetitions of the single-stream benchmark; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Serving sweep: concurrency levels, comma-separated [default with --serve: 1,4,16,64].
    /// Without --serve the engine runs in this process.
    #[arg(long, value_delimiter = ',')]
    pub streams: Vec<usize>,
    /// Serving sweep over HTTP against the server at this URL (`http://` or `https://`),
    /// with streaming `/v1/completions` requests.
    #[arg(long, value_name = "URL")]
    pub serve: Option<String>,
    /// API key sent as `Authorization: Bearer <key>` with --serve.
    #[arg(long, env = "HELIXFLOW_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// PEM certificate(s) to trust for an `https://` --serve URL [default: the Mozilla roots].
    #[arg(long, value_name = "PEM", requires = "serve")]
    pub cacert: Option<PathBuf>,
    /// Requests each concurrent stream sends, one after another, in a serving sweep.
    #[arg(long, default_value_t = 1)]
    pub requests_per_stream: usize,
    /// Seed of a serving sweep's prompt token ids [default: a new one per run]: the same seed
    /// sends the same prompts, which a server that ran them before finds in its prefix cache.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Platform overhead instead: what authentication, quota admission and usage recording
    /// cost each request, with requests arriving at --rate per second for --seconds, on the
    /// database `DATABASE_URL` names (default: a temporary SQLite file).
    #[arg(long, conflicts_with_all = ["serve", "streams"])]
    pub platform: bool,
    /// Sentences per second of an embedding model (`--model`, default the built-in
    /// embedding model) for batches of 1, 8 and 32 short and 256-token inputs.
    #[arg(long, conflicts_with_all = ["serve", "streams", "platform"])]
    pub embeddings: bool,
    /// Requests per second of --platform.
    #[arg(long, default_value_t = 1000, requires = "platform")]
    pub rate: u64,
    /// Seconds of --platform load (per case).
    #[arg(long, default_value_t = 10, requires = "platform")]
    pub seconds: u64,
    /// Hold every answer of an in-process sweep to this JSON schema (structured outputs), to
    /// measure what the grammar's masks cost. The schema must not let an answer end within
    /// --gen-tokens (e.g. an array with a large `minItems`).
    #[arg(
        long,
        value_name = "FILE",
        requires = "streams",
        conflicts_with = "serve"
    )]
    pub json_schema: Option<PathBuf>,
    /// The in-process engine's token budget per step (as `helixflow serve`'s flag).
    #[arg(long, default_value_t = 512, conflicts_with = "serve")]
    pub max_batched_tokens: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `helixflow serve`. Every flag can also come from the environment variable named, or from
/// the `--config` TOML file (keys are the flag names, e.g. `port = 8443`, `no_tls = true`);
/// a flag beats the environment, which beats the file, which beats the default.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file of settings.
    #[arg(long, env = "HELIXFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", env = "HELIXFLOW_HOST")]
    pub host: std::net::IpAddr,
    /// HTTPS (or HTTP) port; 0 picks a free one.
    #[arg(long, default_value_t = 8443, env = "HELIXFLOW_PORT")]
    pub port: u16,
    /// gRPC port; 0 picks a free one.
    #[arg(long, default_value_t = 50051, env = "HELIXFLOW_GRPC_PORT")]
    pub grpc_port: u16,
    /// Serve no gRPC.
    #[arg(long, env = "HELIXFLOW_NO_GRPC")]
    pub no_grpc: bool,
    /// Also serve every route (Ollama's `/api/*` among them) on this port, as Ollama's
    /// clients expect (11434 by their convention); 0 picks a free one.
    #[arg(long, env = "HELIXFLOW_OLLAMA_PORT")]
    pub ollama_port: Option<u16>,
    /// A model to serve: a built-in id, a hub id or a path, chat or embedding; repeat the
    /// flag (or separate with commas) for several. Default: the built-in chat and embedding
    /// models.
    #[arg(
        long,
        short,
        env = "HELIXFLOW_MODEL",
        value_delimiter = ',',
        default_values_t = [DEFAULT_CHAT_MODEL.to_string(), DEFAULT_EMBEDDING_MODEL.to_string()]
    )]
    pub model: Vec<String>,
    /// A folder of models that load on first use: a request for `NAME` loads `NAME.gguf` or
    /// the model folder `NAME/` from it.
    #[arg(long, env = "HELIXFLOW_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Let a request for a model not in the cache download it: a built-in id, or a Hugging
    /// Face hub id (`org/name[:file.gguf]`).
    #[arg(long, env = "HELIXFLOW_ALLOW_PULL")]
    pub allow_pull: bool,
    /// Unload a model this long after its last request (5m, 1h, 30s; 0: at once; -1 or
    /// forever: never). A request may ask for its own (Ollama's `keep_alive`).
    #[arg(long, default_value = "forever", env = "HELIXFLOW_KEEP_ALIVE", value_parser = parse_keep_alive)]
    pub keep_alive: KeepAlive,
    /// The most memory, in MiB, the weights and KV caches of all loaded models may take
    /// together; to load another model, idle ones are unloaded, least recently used first,
    /// and a request that cannot fit beside busy models gets 503 with Retry-After.
    #[arg(long, value_name = "MIB", env = "HELIXFLOW_MEMORY_BUDGET_MIB")]
    pub memory_budget_mib: Option<u64>,
    /// A Jinja chat template file in place of the models' own: `FILE` for every chat model,
    /// `MODEL=FILE` for one (repeat the flag for several). A base model without a template
    /// (gemma-3-270m) answers chat requests only with one.
    #[arg(long, value_name = "[MODEL=]FILE")]
    pub chat_template: Vec<String>,
    /// Quantise the safetensors chat models' matrices at load to `q8_0` or `q4_0`, so that the
    /// packed kernels serve it (a GGUF keeps its own formats).
    #[arg(long, value_name = "q8_0|q4_0")]
    pub quantize: Option<LoadQuantization>,
    /// API key that `/v1` requests must send as `Authorization: Bearer <key>`.
    #[arg(long, env = "HELIXFLOW_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Allow listening on a non-loopback address without an API key (only with
    /// --no-database: the platform database always requires keys).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Serve without the platform database: no stored keys, users, quotas or usage records,
    /// only the --api-key if one is given. Without this flag the database is `DATABASE_URL`
    /// (or `DATABASE_TYPE` with `DATABASE_PATH`), else `helixflow.db` in the data directory.
    #[arg(long, env = "HELIXFLOW_NO_DATABASE")]
    pub no_database: bool,
    /// Serve plain HTTP (behind a TLS-terminating proxy).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub no_tls: bool,
    /// PEM certificate chain; without it a self-signed localhost certificate is used.
    #[arg(long, requires = "tls_key", env = "HELIXFLOW_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert", env = "HELIXFLOW_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Where the server keeps its files (the SQLite database, the token secret, the first
    /// admin key, the self-signed certificate), private to its owner (0700, files 0600);
    /// default: the user's data directory.
    #[arg(long, env = "HELIXFLOW_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Most tokens computed per engine step.
    #[arg(long, default_value_t = 512, env = "HELIXFLOW_MAX_BATCHED_TOKENS")]
    pub max_batched_tokens: usize,
    /// Most sequences running at once.
    #[arg(long, default_value_t = 64, env = "HELIXFLOW_MAX_NUM_SEQS")]
    pub max_num_seqs: usize,
    /// Memory for the KV cache, in MiB.
    #[arg(long, default_value_t = 1024, env = "HELIXFLOW_KV_CACHE_MIB")]
    pub kv_cache_mib: usize,
    /// Requests that may wait in the queue before new ones get 503.
    #[arg(long, default_value_t = 256, env = "HELIXFLOW_QUEUE_CAPACITY")]
    pub queue_capacity: usize,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 4 << 20, env = "HELIXFLOW_BODY_LIMIT")]
    pub body_limit: usize,
    /// Seconds one generation may run before it is cut off.
    #[arg(long, default_value_t = 600, env = "HELIXFLOW_REQUEST_TIMEOUT_SECONDS")]
    pub request_timeout_seconds: u64,
    /// Seconds in-flight requests get to finish after SIGTERM or ctrl-c.
    #[arg(long, default_value_t = 30, env = "HELIXFLOW_GRACE_SECONDS")]
    pub grace_seconds: u64,
    /// Seconds an access token from `POST /v1/auth/login` lasts (1 to 86400).
    #[arg(long, default_value_t = 900, env = "HELIXFLOW_TOKEN_LIFETIME_SECONDS")]
    pub token_lifetime_seconds: u64,
    /// The secret access tokens are signed with (with a salt from the database), made on
    /// first use; replicas sharing a database need the same file. Default: `token-secret` in
    /// the data directory.
    #[arg(long, env = "HELIXFLOW_TOKEN_SECRET_FILE")]
    pub token_secret_file: Option<PathBuf>,
    /// Most open connections (HTTP and gRPC each); beyond it new connections are closed at
    /// once.
    #[arg(long, default_value_t = 1024, env = "HELIXFLOW_MAX_CONNECTIONS")]
    pub max_connections: usize,
    /// Seconds a connection may wait for a request's headers: an idle keep-alive connection
    /// between requests, or a client slow to send them (also the TLS handshake's limit).
    #[arg(long, default_value_t = 15, env = "HELIXFLOW_IDLE_TIMEOUT_SECONDS")]
    pub idle_timeout_seconds: u64,
}

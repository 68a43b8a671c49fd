//! Resolving a model argument to a loaded model.

use anyhow::{bail, Context, Result};
use helixflow_core::chat_model::ChatModel;
use helixflow_core::embeddings::EmbeddingModel;
use helixflow_core::source::{self, ModelKind, ResolvedModel, StderrProgress};

/// Finds (and if needed downloads) the model named by `arg`.
pub fn resolve(arg: &str) -> Result<ResolvedModel> {
    Ok(source::resolve_arg(arg, &StderrProgress)?)
}

/// Loads a chat model.
pub fn chat_model(arg: &str) -> Result<ChatModel> {
    let resolved = resolve(arg)?;
    if resolved.kind != ModelKind::Chat {
        bail!("`{arg}` is an embedding model; use `helixflow embed` or pick a chat model");
    }
    ChatModel::load_named(&resolved.path, &resolved.name)
        .with_context(|| format!("loading {}", resolved.path.display()))
}

/// Loads an embedding model.
pub fn embedding_model(arg: &str) -> Result<EmbeddingModel> {
    let resolved = resolve(arg)?;
    if resolved.kind != ModelKind::Embedding {
        bail!("`{arg}` is a chat model; use `helixflow run` or pick an embedding model");
    }
    Ok(EmbeddingModel::load(&resolved.path)
        .with_context(|| format!("loading {}", resolved.path.display()))?
        .with_name(resolved.name))
}

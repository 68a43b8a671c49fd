//! Resolving a model argument to a loaded model.

use std::path::Path;

use anyhow::{bail, Context, Result};
use helixflow_core::chat_model::{ChatModel, LoadOptions};
use helixflow_core::embeddings::EmbeddingModel;
use helixflow_core::models::LoadQuantization;
use helixflow_core::registry::ChatTemplateOverride;
use helixflow_core::source::{self, ModelKind, ResolvedModel, StderrProgress};

/// Finds (and if needed downloads) the model named by `arg`.
pub fn resolve(arg: &str) -> Result<ResolvedModel> {
    Ok(source::resolve_arg(arg, &StderrProgress)?)
}

/// Loads a chat model with the chat template in `template_file` in place of its own, and a
/// safetensors model's matrices quantised to `quantize`.
pub fn chat_model_with(
    arg: &str,
    template_file: Option<&Path>,
    quantize: Option<LoadQuantization>,
) -> Result<ChatModel> {
    let resolved = resolve(arg)?;
    if resolved.kind != ModelKind::Chat {
        bail!("`{arg}` is an embedding model; use `helixflow embed` or pick a chat model");
    }
    let template = template_file.map(ChatTemplateOverride::read).transpose()?;
    let options = LoadOptions {
        chat_template: template.as_deref(),
        quantize,
    };
    ChatModel::load_with(&resolved.path, &resolved.name, &options)
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

//! The models a process serves, by id: chat models, each behind its own engine, and
//! embedding models. Every front end (HTTP, gRPC, Python) looks models up here, so an unknown
//! id or a model of the wrong kind is reported the same way everywhere.

use std::sync::Arc;

use crate::chat_model::{ChatModel, LoadOptions};
use crate::embeddings::EmbeddingModel;
use crate::engine::{Engine, EngineConfig, EngineHandle};
use crate::models::LoadQuantization;
use crate::source::{self, ModelKind, Progress};
use crate::{Error, Result};

/// One served model.
#[derive(Clone)]
pub enum ServedModel {
    /// A chat (text generation) model and the engine that runs it.
    Chat(EngineHandle),
    /// An embedding model.
    Embedding(Arc<EmbeddingModel>),
}

impl ServedModel {
    /// The id clients name the model by.
    pub fn id(&self) -> &str {
        match self {
            Self::Chat(engine) => engine.model().name(),
            Self::Embedding(model) => model.name(),
        }
    }

    /// Whether it generates text or embeds it.
    pub fn kind(&self) -> ModelKind {
        match self {
            Self::Chat(_) => ModelKind::Chat,
            Self::Embedding(_) => ModelKind::Embedding,
        }
    }

    /// Its engine, or [`Error::WrongModelKind`] if it is an embedding model.
    pub fn chat(&self) -> Result<&EngineHandle> {
        match self {
            Self::Chat(engine) => Ok(engine),
            Self::Embedding(_) => Err(self.wrong_kind(ModelKind::Chat)),
        }
    }

    /// The embedding model, or [`Error::WrongModelKind`] if it is a chat model.
    pub fn embedding(&self) -> Result<&Arc<EmbeddingModel>> {
        match self {
            Self::Embedding(model) => Ok(model),
            Self::Chat(_) => Err(self.wrong_kind(ModelKind::Embedding)),
        }
    }

    fn wrong_kind(&self, wanted: ModelKind) -> Error {
        Error::WrongModelKind {
            model: self.id().to_string(),
            wanted,
        }
    }
}

/// A chat template the operator gives in place of a model's own (`--chat-template`), as
/// for a base model that has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplateOverride {
    /// The model it is for (the id it is served under); `None`: every chat model.
    pub model: Option<String>,
    /// The template's Jinja source.
    pub source: String,
}

impl ChatTemplateOverride {
    /// Reads `[MODEL=]FILE`: the template in FILE, for MODEL or for every chat model.
    pub fn from_arg(arg: &str) -> Result<Self> {
        let (model, file) = match arg.split_once('=') {
            Some((model, file)) if !model.is_empty() && !model.contains(['/', '\\']) => {
                (Some(model.to_string()), file)
            }
            _ => (None, arg),
        };
        let source = Self::read(std::path::Path::new(file))?;
        Ok(Self { model, source })
    }

    /// The Jinja source in `file`.
    pub fn read(file: &std::path::Path) -> Result<String> {
        std::fs::read_to_string(file).map_err(|e| {
            Error::InvalidRequest(format!(
                "cannot read the chat template {}: {e}",
                file.display()
            ))
        })
    }

    /// The template for the model served as `id`, if any of `overrides` is for it (one
    /// naming it wins over one for every model).
    pub fn find<'a>(overrides: &'a [Self], id: &str) -> Option<&'a str> {
        overrides
            .iter()
            .find(|o| o.model.as_deref() == Some(id))
            .or_else(|| overrides.iter().find(|o| o.model.is_none()))
            .map(|o| o.source.as_str())
    }
}

/// The served models in the order they were added; ids are unique.
#[derive(Clone, Default)]
pub struct ModelRegistry {
    models: Vec<ServedModel>,
}

impl ModelRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resolves each argument (a built-in id, a hub id or a path, as the CLI accepts), loads
    /// it, and starts an engine with `engine` settings for every chat model.
    pub fn load(args: &[String], engine: &EngineConfig, progress: &dyn Progress) -> Result<Self> {
        Self::load_with_templates(args, engine, &[], progress)
    }

    /// [`Self::load`], giving chat models the operator's templates where `templates` has one
    /// for them ([`ChatTemplateOverride::find`]). A template for a model not served is an
    /// error, so that a typo is not silently ignored.
    pub fn load_with_templates(
        args: &[String],
        engine: &EngineConfig,
        templates: &[ChatTemplateOverride],
        progress: &dyn Progress,
    ) -> Result<Self> {
        Self::load_with_options(args, engine, templates, None, progress)
    }

    /// [`Self::load_with_templates`], quantising the safetensors chat models to `quantize` at
    /// load (GGUF models keep their formats; asking for it with no safetensors chat model
    /// served is an error).
    pub fn load_with_options(
        args: &[String],
        engine: &EngineConfig,
        templates: &[ChatTemplateOverride],
        quantize: Option<LoadQuantization>,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let mut registry = Self::new();
        let mut quantized = false;
        for arg in args {
            let resolved = source::resolve_arg(arg, progress)?;
            let served = match resolved.kind {
                ModelKind::Chat => {
                    let folder = crate::models::is_hf_folder(&resolved.path);
                    quantized |= folder && quantize.is_some();
                    let options = LoadOptions {
                        chat_template: ChatTemplateOverride::find(templates, &resolved.name),
                        quantize: quantize.filter(|_| folder),
                    };
                    let chat = ChatModel::load_with(&resolved.path, &resolved.name, &options)?;
                    ServedModel::Chat(Engine::start(Arc::new(chat), engine.clone())?)
                }
                ModelKind::Embedding => ServedModel::Embedding(Arc::new(
                    EmbeddingModel::load(&resolved.path)?.with_name(resolved.name),
                )),
            };
            registry.add(served)?;
        }
        if let (Some(format), false) = (quantize, quantized) {
            return Err(Error::InvalidRequest(format!(
                "--quantize {format:?} applies to safetensors chat models, and none is served"
            )));
        }
        if let Some(unknown) = templates.iter().find_map(|o| {
            o.model
                .as_deref()
                .filter(|id| !matches!(registry.get(id), Some(ServedModel::Chat(_))))
        }) {
            return Err(Error::InvalidRequest(format!(
                "--chat-template names `{unknown}`, which is not a chat model served here"
            )));
        }
        Ok(registry)
    }

    /// Adds a model; a second model with the same id is an error.
    pub fn add(&mut self, model: ServedModel) -> Result<()> {
        if self.get(model.id()).is_some() {
            return Err(Error::InvalidRequest(format!(
                "two models are named `{}`",
                model.id()
            )));
        }
        self.models.push(model);
        Ok(())
    }

    /// Every served model.
    pub fn models(&self) -> &[ServedModel] {
        &self.models
    }

    /// The model with this id.
    pub fn get(&self, id: &str) -> Option<&ServedModel> {
        self.models.iter().find(|m| m.id() == id)
    }

    /// The engine of chat model `id`: [`Error::ModelNotFound`] if no model has that id,
    /// [`Error::WrongModelKind`] if it is an embedding model.
    pub fn chat(&self, id: &str) -> Result<&EngineHandle> {
        self.served(id)?.chat()
    }

    /// Embedding model `id`: [`Error::ModelNotFound`] if no model has that id,
    /// [`Error::WrongModelKind`] if it is a chat model.
    pub fn embedding(&self, id: &str) -> Result<&Arc<EmbeddingModel>> {
        self.served(id)?.embedding()
    }

    fn served(&self, id: &str) -> Result<&ServedModel> {
        self.get(id)
            .ok_or_else(|| Error::ModelNotFound(id.to_string()))
    }

    /// The engines of the chat models.
    pub fn engines(&self) -> impl Iterator<Item = &EngineHandle> {
        self.models.iter().filter_map(|m| match m {
            ServedModel::Chat(engine) => Some(engine),
            ServedModel::Embedding(_) => None,
        })
    }
}

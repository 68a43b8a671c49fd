//! A served model: a chat model behind its engine, or an embedding model.

use std::sync::Arc;

use crate::embeddings::EmbeddingModel;
use crate::engine::EngineHandle;
use crate::source::ModelKind;
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

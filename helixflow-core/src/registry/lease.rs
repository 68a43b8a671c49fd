//! One request's hold on a model.

use std::sync::Arc;

use super::{KeepAlive, ModelRegistry, ServedModel};
use crate::embeddings::EmbeddingModel;
use crate::engine::EngineHandle;
use crate::Result;

/// One request's hold on a model: while any is held, the model is not unloaded. Dropping it
/// marks the model used now (its keep-alive starts over).
pub struct ModelLease {
    registry: ModelRegistry,
    model: ServedModel,
}

impl std::fmt::Debug for ModelLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelLease")
            .field("model", &self.model.id())
            .finish()
    }
}

impl ModelLease {
    pub(super) fn new(registry: &ModelRegistry, model: ServedModel) -> Self {
        Self {
            registry: registry.clone(),
            model,
        }
    }

    /// The model.
    pub fn model(&self) -> &ServedModel {
        &self.model
    }

    /// Its engine, or [`Error::WrongModelKind`] for an embedding model.
    pub fn chat(&self) -> Result<&EngineHandle> {
        self.model.chat()
    }

    /// The embedding model, or [`Error::WrongModelKind`] for a chat model.
    pub fn embedding(&self) -> Result<&Arc<EmbeddingModel>> {
        self.model.embedding()
    }

    /// Keeps the model loaded this long once idle, from now on (as Ollama's per-request
    /// `keep_alive` does); zero unloads it when the last request ends. A model added
    /// directly (which could not be loaded again) keeps its own.
    pub fn set_keep_alive(&self, keep_alive: KeepAlive) {
        let mut slots = self.registry.lock();
        if let Some(slot) = slots.get_mut(self.model.id()) {
            if slot.reloadable {
                slot.keep_alive = keep_alive;
            }
        }
        drop(slots);
        self.registry.notify();
    }
}

impl Drop for ModelLease {
    fn drop(&mut self) {
        self.registry.release(self.model.id());
    }
}

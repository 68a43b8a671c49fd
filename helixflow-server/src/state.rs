//! What the handlers share: the engine, the embedding model, the key.

use std::sync::Arc;
use std::time::Duration;

use helixflow_core::completion::unix_now;
use helixflow_core::embeddings::EmbeddingModel;
use helixflow_core::engine::EngineHandle;

use crate::metrics::Metrics;

/// The state of the HTTP application; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    engine: EngineHandle,
    embedder: Option<Arc<EmbeddingModel>>,
    api_key: Option<String>,
    body_limit: usize,
    started: u64,
    metrics: Arc<Metrics>,
    request_timeout: Duration,
}

impl AppState {
    /// Serves the engine's chat model and, if given, an embedding model. With `api_key`,
    /// every `/v1` request must carry `Authorization: Bearer <api_key>`.
    pub fn new(
        engine: EngineHandle,
        embedder: Option<Arc<EmbeddingModel>>,
        api_key: Option<String>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine,
                embedder,
                api_key,
                body_limit: crate::DEFAULT_BODY_LIMIT,
                started: unix_now(),
                metrics: Arc::default(),
                request_timeout: crate::DEFAULT_REQUEST_TIMEOUT,
            }),
        }
    }

    /// The same state with another request body limit (bytes).
    pub fn with_body_limit(self, bytes: usize) -> Self {
        let mut inner = (*self.inner).clone();
        inner.body_limit = bytes;
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The same state with another limit on how long one generation may take.
    pub fn with_request_timeout(self, timeout: Duration) -> Self {
        let mut inner = (*self.inner).clone();
        inner.request_timeout = timeout;
        Self {
            inner: Arc::new(inner),
        }
    }

    /// How long one generation may take before it is cut off.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// The engine serving the chat model.
    pub fn engine(&self) -> &EngineHandle {
        &self.inner.engine
    }

    /// The id of the chat model.
    pub fn chat_model_id(&self) -> &str {
        self.inner.engine.model().name()
    }

    /// The embedding model, if one is served.
    pub fn embedder(&self) -> Option<&Arc<EmbeddingModel>> {
        self.inner.embedder.as_ref()
    }

    /// The key `/v1` requests must present, if any.
    pub fn api_key(&self) -> Option<&str> {
        self.inner.api_key.as_deref()
    }

    /// The request body limit in bytes.
    pub fn body_limit(&self) -> usize {
        self.inner.body_limit
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// When the server started (Unix seconds): the `created` time of its models.
    pub fn started(&self) -> u64 {
        self.inner.started
    }
}

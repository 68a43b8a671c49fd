//! What the handlers share: the served models, the key, the limits and the metrics.

use std::sync::Arc;
use std::time::Duration;

use helixflow_core::completion::unix_now;
use helixflow_core::embeddings::EmbeddingModel;
use helixflow_core::engine::EngineHandle;
use helixflow_core::platform::{Authenticator, Meter};
use helixflow_core::registry::ModelRegistry;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// The state of the HTTP application; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    models: ModelRegistry,
    auth: Arc<Authenticator>,
    body_limit: usize,
    started: u64,
    metrics: Arc<Metrics>,
    request_timeout: Duration,
    meter: Meter,
}

impl AppState {
    /// Serves the models of the registry. With `api_key`, every `/v1` request must carry
    /// `Authorization: Bearer <api_key>`; [`AppState::with_auth`] adds the store's keys.
    pub fn new(models: ModelRegistry, api_key: Option<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                models,
                auth: Arc::new(Authenticator::new(None, api_key)),
                body_limit: crate::DEFAULT_BODY_LIMIT,
                started: unix_now(),
                metrics: Arc::default(),
                request_timeout: crate::DEFAULT_REQUEST_TIMEOUT,
                meter: Meter::off(),
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

    /// The served models.
    pub fn models(&self) -> &ModelRegistry {
        &self.inner.models
    }

    /// The engine of chat model `id` (404 for an unknown id, 400 for an embedding model).
    pub fn chat_engine(&self, id: &str) -> Result<&EngineHandle, ApiError> {
        self.inner.models.chat(id).map_err(model_error)
    }

    /// Embedding model `id` (404 for an unknown id, 400 for a chat model).
    pub fn embedder(&self, id: &str) -> Result<&Arc<EmbeddingModel>, ApiError> {
        self.inner.models.embedding(id).map_err(model_error)
    }

    /// The same state authenticating with `auth` (the operator key and the store's keys).
    pub fn with_auth(self, auth: Authenticator) -> Self {
        let mut inner = (*self.inner).clone();
        inner.auth = Arc::new(auth);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The same state metering requests with `meter`: rate limits, budgets and usage records.
    pub fn with_meter(self, meter: Meter) -> Self {
        let mut inner = (*self.inner).clone();
        inner.meter = meter;
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Quotas and usage accounting (off without a store).
    pub fn meter(&self) -> &Meter {
        &self.inner.meter
    }

    /// Who may call `/v1`.
    pub fn auth(&self) -> &Authenticator {
        &self.inner.auth
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

/// A registry lookup failure, naming `model` as the field at fault.
fn model_error(e: helixflow_core::Error) -> ApiError {
    ApiError {
        param: Some("model".into()),
        ..e.into()
    }
}

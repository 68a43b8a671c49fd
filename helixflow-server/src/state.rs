//! What the handlers share: the served models, the key, the limits and the metrics.

use std::sync::Arc;
use std::time::Duration;

use helixflow_core::completion::unix_now;
use helixflow_core::embeddings::EmbeddingModel;
use helixflow_core::engine::EngineHandle;
use helixflow_core::platform::{Authenticator, Meter};
use helixflow_core::registry::{ModelLease, ModelRegistry};

use tokio::sync::watch;

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
    phase: watch::Receiver<Phase>,
    /// The stored responses of a server without a database.
    memory_responses: Arc<crate::responses::MemoryResponses>,
    /// Places on the blocking pool for preparing prompts (rendering, tokenising): one per
    /// core, so a burst of large prompts queues here instead of taking every thread.
    preparing: Arc<tokio::sync::Semaphore>,
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
                phase: Phase::never(),
                memory_responses: Arc::default(),
                preparing: Arc::new(tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get()),
                )),
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

    /// The same state following a shutdown's `phase`: generations still running when it
    /// reaches [`Phase::Cut`] end with a shutdown error.
    pub fn with_phase(self, phase: watch::Receiver<Phase>) -> Self {
        let mut inner = (*self.inner).clone();
        inner.phase = phase;
        Self {
            inner: Arc::new(inner),
        }
    }

    /// How far a shutdown has gone.
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.inner.phase.clone()
    }

    /// Runs `work` (CPU-heavy: a template render, a tokenisation) on the blocking pool, at
    /// most one such job per core at a time, off the threads that serve connections.
    pub(crate) async fn prepare<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> helixflow_core::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let _permit = self
            .inner
            .preparing
            .acquire()
            .await
            .map_err(|_| ApiError::internal("the preparation pool is closed"))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ApiError::internal(format!("preparing the request failed: {e}")))?
            .map_err(ApiError::from)
    }

    /// The stored responses of a server without a database.
    pub(crate) fn memory_responses(&self) -> &crate::responses::MemoryResponses {
        &self.inner.memory_responses
    }

    /// How long one generation may take before it is cut off.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// The served models.
    pub fn models(&self) -> &ModelRegistry {
        &self.inner.models
    }

    /// Model `id`, held for one request: loaded first (off the executor) if it is not. 404
    /// for an id the registry does not know, 503 with `Retry-After` when it cannot fit
    /// beside the busy models.
    pub(crate) async fn lease(&self, id: &str) -> Result<ModelLease, ApiError> {
        if let Some(lease) = self.inner.models.acquire_loaded(id) {
            return Ok(lease);
        }
        let (models, id) = (self.inner.models.clone(), id.to_string());
        tokio::task::spawn_blocking(move || models.acquire(&id))
            .await
            .map_err(|e| ApiError::internal(format!("loading the model failed: {e}")))?
            .map_err(model_error)
    }

    /// Chat model `id`, held for one request ([`Self::lease`]; 404 for an embedding model).
    pub(crate) async fn chat_lease(&self, id: &str) -> Result<ModelLease, ApiError> {
        let lease = self.lease(id).await?;
        self.chat_of(&lease)?;
        Ok(lease)
    }

    /// Embedding model `id`, held for one request ([`Self::lease`]; 404 for a chat model).
    pub(crate) async fn embedding_lease(&self, id: &str) -> Result<ModelLease, ApiError> {
        let lease = self.lease(id).await?;
        self.embedder_of(&lease)?;
        Ok(lease)
    }

    /// The engine of the chat model `lease` holds (404 for an embedding model).
    pub(crate) fn chat_of<'l>(&self, lease: &'l ModelLease) -> Result<&'l EngineHandle, ApiError> {
        lease.chat().map_err(model_error)
    }

    /// The embedding model `lease` holds (404 for a chat model).
    pub(crate) fn embedder_of<'l>(
        &self,
        lease: &'l ModelLease,
    ) -> Result<&'l Arc<EmbeddingModel>, ApiError> {
        lease.embedding().map_err(model_error)
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

/// How far a shutdown has gone, as the streaming calls see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving.
    Serving,
    /// Shutting down: no new calls; endless streams (the stats feed) end, generations finish.
    Draining,
    /// The grace period is over: generations still running end with a shutdown error (and
    /// are recorded with status 503, not as cancelled by their client) before the server
    /// stops.
    Cut,
}

impl Phase {
    /// A phase that stays [`Phase::Serving`].
    pub fn never() -> watch::Receiver<Phase> {
        watch::channel(Phase::Serving).1
    }

    /// Resolves once `phase` reaches `at`; never, if its sender is gone without it.
    pub(crate) async fn reached(phase: &mut watch::Receiver<Phase>, at: Phase) {
        if phase.wait_for(|p| *p >= at).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

//! # helixflow-server
//!
//! HelixFlow's OpenAI-compatible HTTP API, a thin layer over `helixflow-core`: handlers parse
//! the wire format, call the engine or the embedding model, and format the answer. All
//! behaviour (batching, sampling, cancellation) lives in the core.
//!
//! [`router`] builds the axum application for an [`AppState`]; the routes are
//! `/v1/chat/completions`, `/v1/completions` (JSON or SSE streams), `/v1/embeddings`,
//! `/v1/models[/{id}]`, `/health`, `/ready` and `/metrics` (Prometheus). [`grpc`] serves the
//! same models over gRPC, and [`serve()`] runs both, over TLS by default.

mod auth;
pub mod error;
pub mod grpc;
pub mod metrics;
mod routes;
pub mod serve;
pub mod state;
mod wire;

pub use error::ApiError;
pub use serve::{serve, Listening, ServeConfig, ServeError, Tls};
pub use state::AppState;

use axum::routing::{get, post};
use axum::Router;

/// The request body limit when the state sets none (bytes).
pub const DEFAULT_BODY_LIMIT: usize = 4 << 20;

/// How long one generation may run when the state sets no limit.
pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The HTTP application: every route, with authentication on `/v1/*`.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/chat/completions", post(routes::chat::chat_completions))
        .route("/completions", post(routes::completions::completions))
        .route("/embeddings", post(routes::embeddings::embeddings))
        .route("/models", get(routes::models::list))
        .route("/models/{id}", get(routes::models::get))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ));
    Router::new()
        .nest("/v1", v1)
        .route("/health", get(routes::health::health))
        .route("/ready", get(routes::health::ready))
        .route("/metrics", get(metrics::metrics))
        // After routing, so that requests are counted by their route template.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .fallback(routes::health::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(state.body_limit()))
        .with_state(state)
}

//! # helixflow-server
//!
//! HelixFlow's OpenAI-compatible HTTP API, a thin layer over `helixflow-core`: handlers parse
//! the wire format, call the engine or the embedding model, and format the answer. All
//! behaviour (batching, sampling, cancellation) lives in the core.
//!
//! [`router`] builds the axum application for an [`AppState`]; the routes are
//! `/v1/chat/completions`, `/v1/completions` (JSON or SSE streams), `/v1/embeddings`,
//! `/v1/models[/{id}]`, the Responses API's `/v1/responses[/{id}]`, Anthropic's
//! `/v1/messages[/count_tokens]`, Ollama's `/api/*` and `/`, `/v1/auth/login|logout`,
//! `/v1/usage`, the admin routes (`/v1/admin/keys`, `/v1/admin/models[/load|/unload]`, `/v1/admin/users`, `/v1/admin/tokens/revoke`, `/v1/admin/usage`,
//! `/v1/admin/key-defaults`), `/tokenize` and `/detokenize`, `/health`, `/ready`, `/metrics` (Prometheus) and `/openapi.json`.
//! With a platform store, requests of keys with limits are admitted against them (429 with
//! `Retry-After` when over) and every request's usage is recorded. [`grpc`] serves the
//! same models over gRPC, and [`serve()`] runs both, over TLS by default.

mod anthropic;
mod auth;
pub mod connections;
pub mod error;
pub mod grpc;
mod inference;
pub mod metrics;
mod ollama;
mod openapi;
mod ratelimit;
mod responses;
mod routes;
pub mod serve;
pub mod state;
mod status;
mod wire;

pub use error::ApiError;
pub use serve::{serve, Listening, ServeConfig, ServeError, Tls};
pub use state::AppState;

use axum::routing::{get, post};
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The most headers a request may carry (431 beyond).
pub const MAX_HEADERS: usize = 100;

/// The request body limit when the state sets none (bytes).
pub const DEFAULT_BODY_LIMIT: usize = 4 << 20;

/// How long one generation may run when the state sets no limit.
pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The HTTP application: every route, with authentication on `/v1/*`, and the OpenAPI
/// document of them at `/openapi.json`.
pub fn router(state: AppState) -> Router {
    let v1 = OpenApiRouter::new()
        .routes(routes!(routes::chat::chat_completions))
        .routes(routes!(routes::completions::completions))
        .routes(routes!(routes::embeddings::embeddings))
        .routes(routes!(routes::models::list))
        .routes(routes!(routes::models::get))
        .routes(routes!(routes::usage::own_usage))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(routes::admin::create_key, routes::admin::list_keys))
                .routes(routes!(routes::admin::revoke_key))
                .routes(routes!(
                    routes::users::create_user,
                    routes::users::list_users
                ))
                .routes(routes!(routes::users::disable_user))
                .routes(routes!(routes::users::revoke_token))
                .routes(routes!(routes::usage::usage_report))
                .routes(routes!(routes::models::loaded))
                .routes(routes!(routes::models::load))
                .routes(routes!(routes::models::unload))
                .routes(routes!(routes::monitoring::stats))
                .routes(routes!(routes::monitoring::validate))
                .routes(routes!(
                    routes::usage::key_defaults,
                    routes::usage::set_key_defaults
                ))
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    auth::require_admin_key,
                )),
        )
        // Login needs no key; logout checks the access token itself.
        .routes(routes!(routes::auth::login))
        .routes(routes!(routes::auth::logout));
    let tokens = OpenApiRouter::new()
        .routes(routes!(routes::tokenize::tokenize))
        .routes(routes!(routes::tokenize::detokenize))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ));
    let (app, api) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest("/v1", v1)
        .merge(tokens)
        .routes(routes!(routes::health::health))
        .routes(routes!(routes::health::ready))
        .routes(routes!(metrics::metrics))
        .split_for_parts();
    let document = api.to_json().expect("the OpenAPI document serialises");
    let openapi = move || {
        let document = document.clone();
        async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                document,
            )
        }
    };
    // OpenAI's Responses API.
    let responses = Router::new()
        .route("/v1/responses", post(responses::create))
        .route("/v1/responses/{id}", get(responses::get))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ));
    // Anthropic's Messages API, with its own error shape.
    let anthropic = Router::new()
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ))
        .route_layer(axum::middleware::from_fn(anthropic::errors));
    // Ollama's API, with its own error shape; `/` and the version need no key.
    let ollama = Router::new()
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/pull", post(ollama::pull))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ))
        .route("/api/version", get(ollama::version))
        .route_layer(axum::middleware::from_fn(ollama::errors))
        .route("/", get(ollama::root));
    app.merge(responses)
        .merge(anthropic)
        .merge(ollama)
        .route("/openapi.json", get(openapi))
        // After routing, so that requests are counted by their route template.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .fallback(routes::health::not_found)
        .method_not_allowed_fallback(routes::health::method_not_allowed)
        .layer(axum::middleware::from_fn(routes::health::limit_headers))
        .layer(axum::extract::DefaultBodyLimit::max(state.body_limit()))
        .with_state(state)
}

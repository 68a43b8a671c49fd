//! The OpenAPI document of the HTTP API, served at `GET /openapi.json`. The paths and schemas
//! come from the handlers' `#[utoipa::path]` annotations and the wire types' derives, as the
//! router registers them, so the document cannot drift from the routes.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document's fixed parts; [`crate::router`] adds every route's path and schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "HelixFlow",
        description = "OpenAI-compatible inference API: chat and text completions (JSON or \
                       server-sent events), embeddings, models, and operations endpoints.",
    ),
    modifiers(&BearerKey),
    tags(
        (name = "chat", description = "Chat completions"),
        (name = "completions", description = "Raw text completions"),
        (name = "embeddings", description = "Sentence embeddings"),
        (name = "models", description = "The served models"),
        (name = "tokens", description = "Tokenising and detokenising with a model's tokenizer"),
        (name = "operations", description = "Health, readiness, metrics"),
        (name = "usage", description = "The caller's own usage"),
        (name = "admin", description = "API keys (the admin scope)"),
        (name = "auth", description = "Logins and access tokens"),
    )
)]
pub(crate) struct ApiDoc;

/// `Authorization: Bearer <key>` on `/v1/*`.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

//! The route handlers.

pub(crate) mod chat;
pub(crate) mod completions;
pub(crate) mod embeddings;
mod generate;
pub(crate) mod health;
pub(crate) mod models;

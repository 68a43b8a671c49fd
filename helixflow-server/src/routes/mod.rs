//! The route handlers.

pub(crate) mod admin;
mod answer;
pub(crate) mod auth;
pub(crate) mod chat;
pub(crate) mod completions;
pub(crate) mod embeddings;
pub(crate) mod health;
pub(crate) mod models;
pub(crate) mod monitoring;
pub(crate) mod tokenize;
pub(crate) mod usage;
pub(crate) mod users;

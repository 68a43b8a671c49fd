//! # helixflow-core
//!
//! HelixFlow's embeddable inference library.

pub mod calendar;
pub mod chat_model;
pub mod chat_template;
pub mod completion;
pub mod cpu;
pub mod embeddings;
pub mod engine;
pub mod error;
pub mod generation;
pub mod gguf;
pub mod kv_cache;
pub mod models;
#[cfg(feature = "platform")]
pub mod platform;
pub mod registry;
pub mod request;
pub mod sampling;
pub mod source;
pub mod stop;
pub mod streaming;
pub mod tokenizer;

pub use error::{Error, Result};

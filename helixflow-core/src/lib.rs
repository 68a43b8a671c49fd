//! # helixflow-core
//!
//! HelixFlow's embeddable inference library.

pub mod embeddings;
pub mod error;
pub mod gguf;
pub mod models;
pub mod source;

pub use error::{Error, Result};

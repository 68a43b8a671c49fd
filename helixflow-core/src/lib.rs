//! # helixflow-core
//!
//! HelixFlow's embeddable inference library.

pub mod embeddings;
pub mod error;

pub use error::{Error, Result};

//! # helixflow-core
//!
//! HelixFlow's embeddable inference library.

pub mod chat_template;
pub mod error;
pub mod tokenizer;

pub use error::{Error, Result};

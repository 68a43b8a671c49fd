//! # helixflow-core
//!
//! HelixFlow's embeddable inference library.

pub mod error;
pub mod source;

pub use error::{Error, Result};

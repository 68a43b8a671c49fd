//! # helixflow-core
//!
//! HelixFlow's embeddable inference library.

pub mod error;

pub use error::{Error, Result};

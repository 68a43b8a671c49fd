//! # helixflow-core
//!
//! HelixFlow's embeddable inference library.

pub mod error;
pub mod sampling;
pub mod stop;

pub use error::{Error, Result};

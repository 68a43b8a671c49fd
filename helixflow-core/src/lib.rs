//! # helixflow-core
//!
//! HelixFlow's embeddable inference library: models ([`models`], [`chat_model`],
//! [`embeddings`]), the continuous-batching [`engine`] over a paged KV cache, and one request
//! lifecycle that every front end shares: options and prompts become a validated
//! [`request::GenerationRequest`], the engine's events become answers through
//! [`streaming::AnswerBuilder`], and every failure has one [`ErrorClass`] that the HTTP, gRPC
//! and Python front ends each map once. [`structured`] holds answers to a JSON schema, a
//! regular expression or a grammar (llguidance token masks), and [`request::fields`] says
//! which request fields of the OpenAI API are honoured.

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
pub mod reply;
pub mod request;
pub mod sampling;
pub mod source;
pub mod stop;
pub mod streaming;
pub mod structured;
pub mod tokenizer;
pub mod tools;

pub use error::{Error, ErrorClass, Result};

//! # helixflow-server
//!
//! HelixFlow's OpenAI-compatible HTTPS and gRPC server, a thin layer over `helixflow-core`.
//! Its routes are built by the server issue, on top of the engine; this crate has no public
//! items yet.

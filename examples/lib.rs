//! Examples of embedding HelixFlow; see `embed_library.rs` beside this file.

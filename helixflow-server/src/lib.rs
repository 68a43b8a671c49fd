//! HelixFlow server.

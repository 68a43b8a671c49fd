//! Examples of embedding helixflow-core live under `examples/`.

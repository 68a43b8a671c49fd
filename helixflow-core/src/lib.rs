//! HelixFlow core.

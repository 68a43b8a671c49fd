//! The native half of the `helixflow` Python package (`helixflow._native`): the engine of
//! `helixflow-core` in-process. The Python half (`python/helixflow`) holds the public API,
//! argument checks, result objects and exceptions.

mod engine;
mod errors;
mod generation;

use pyo3::prelude::*;

/// The extension module `helixflow._native`.
#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add_class::<engine::NativeEngine>()?;
    module.add_class::<generation::NativeGeneration>()?;
    Ok(())
}

//! The core's errors as the exceptions of `helixflow._errors`, and a guard that keeps Rust
//! panics from reaching Python.

use std::panic::{catch_unwind, AssertUnwindSafe};

use helixflow_core::{Error, ErrorClass};
use pyo3::prelude::*;
use pyo3::types::PyType;

/// The Python exception class (in `helixflow._errors`) of a core error's class: the one
/// place the binding maps the core's classification.
fn class_name(error: &Error) -> &'static str {
    match error.class() {
        ErrorClass::ModelNotFound => "ModelNotFoundError",
        ErrorClass::ModelLoad => "ModelLoadError",
        ErrorClass::ContextLength => "ContextLengthError",
        ErrorClass::InvalidRequest | ErrorClass::WrongModelKind | ErrorClass::Conflict => {
            "InvalidRequestError"
        }
        ErrorClass::Overloaded => "OverloadedError",
        ErrorClass::EngineStopped => "EngineStoppedError",
        ErrorClass::Cancelled => "HelixFlowError",
        _ => "InternalError",
    }
}

/// An exception of class `name` (from `helixflow._errors`) with `message`.
pub(crate) fn exception(name: &str, message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::attach(|py| {
        let class = py
            .import("helixflow._errors")
            .and_then(|module| module.getattr(name))
            .and_then(|class| Ok(class.cast_into::<PyType>()?));
        match class {
            Ok(class) => PyErr::from_type(class, message),
            // Only if the package is broken: still an exception, never a crash.
            Err(e) => e,
        }
    })
}

/// A core error as the matching HelixFlow exception.
pub(crate) fn to_py(error: Error) -> PyErr {
    exception(class_name(&error), error.to_string())
}

/// Why a call into the core failed: its error, or a panic (with the panic's message).
#[derive(Debug)]
pub(crate) enum Failure {
    Core(Error),
    Panic(String),
}

impl From<Failure> for PyErr {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Core(error) => to_py(error),
            Failure::Panic(what) => exception(
                "InternalError",
                format!("internal error in the engine: {what}"),
            ),
        }
    }
}

/// A panic's message.
fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs `f`, catching a panic; usable with the GIL released.
pub(crate) fn catch<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(Failure::Core),
        Err(panic) => Err(Failure::Panic(panic_message(panic))),
    }
}

/// Runs a method body, turning a panic into an `InternalError` rather than PyO3's
/// `PanicException` (which is not an `Exception`, so `except Exception` would miss it).
pub(crate) fn no_panic<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|panic| Err(Failure::Panic(panic_message(panic)).into()))
}

/// Runs `f` with the GIL held, turning a core error into its exception and a panic into an
/// `InternalError`.
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T, Error>) -> PyResult<T> {
    catch(f).map_err(PyErr::from)
}

//! One submitted generation, read from Python as stream chunks or as a whole answer. The GIL
//! is released while waiting for the engine; Ctrl-C (KeyboardInterrupt) and dropping the
//! object cancel the request, which frees its KV blocks at the engine's next step.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use helixflow_core::engine::{CancelHandle, EngineEvent, RequestStream};
use helixflow_core::streaming::{AnswerBuilder, AnswerPart};
use pyo3::prelude::*;

use crate::errors::{exception, no_panic, to_py};

/// How often a waiting call looks for signals (Ctrl-C) and cancellation.
const POLL: Duration = Duration::from_millis(50);

/// The reading side's state.
struct Reader {
    events: Option<RequestStream>,
    /// The core's shaping of the events: chunks or the whole answer, as asked at submission.
    builder: AnswerBuilder,
}

/// A running generation (`helixflow._native.NativeGeneration`).
#[pyclass(module = "helixflow._native", name = "NativeGeneration", frozen)]
pub(crate) struct NativeGeneration {
    cancel: CancelHandle,
    reader: Mutex<Reader>,
    /// When Python's signal handlers last ran for this request's caller.
    signals_checked: Mutex<Instant>,
}

impl NativeGeneration {
    pub(crate) fn new(events: RequestStream, builder: AnswerBuilder) -> Self {
        Self {
            cancel: events.cancel_handle(),
            reader: Mutex::new(Reader {
                events: Some(events),
                builder,
            }),
            signals_checked: Mutex::new(Instant::now()),
        }
    }

    fn reader(&self) -> MutexGuard<'_, Reader> {
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next event, waiting with the GIL released; `None` once the request is over or
    /// cancelled. Signals are checked every [`POLL`] whether events come or not (tokens come
    /// faster than that); a signal's exception (KeyboardInterrupt) cancels the request first.
    fn next_event(&self, py: Python<'_>) -> PyResult<Option<EngineEvent>> {
        loop {
            if self.cancel.is_cancelled() {
                self.reader().events = None;
                return Ok(None);
            }
            if self.last_signal_check().elapsed() >= POLL {
                self.check_signals(py)?;
            }
            let polled = py.detach(|| match &self.reader().events {
                Some(events) => events.recv_timeout(POLL),
                None => Err(true),
            });
            match polled {
                Ok(event) => return Ok(Some(event)),
                Err(true) => return Ok(None),
                Err(false) => self.check_signals(py)?,
            }
        }
    }

    fn last_signal_check(&self) -> Instant {
        *self
            .signals_checked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs Python's signal handlers; if one raises, the request is cancelled and the
    /// exception returned.
    fn check_signals(&self, py: Python<'_>) -> PyResult<()> {
        *self
            .signals_checked
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        py.check_signals().inspect_err(|_| self.cancel.cancel())
    }

    /// The next part of the answer (a chunk, or the whole answer) as JSON; `None` at the
    /// end, or once cancelled.
    fn read_part(&self, py: Python<'_>) -> PyResult<Option<String>> {
        loop {
            if self.reader().builder.is_done() {
                return Ok(None);
            }
            let Some(event) = self.next_event(py)? else {
                return Ok(None);
            };
            let mut reader = self.reader();
            let part = reader.builder.push(event).map_err(|e| {
                reader.events = None;
                to_py(e)
            })?;
            if reader.builder.is_done() {
                reader.events = None;
            }
            match part {
                Some(AnswerPart::Chunk(chunk)) => return Ok(Some(to_json(&chunk))),
                Some(AnswerPart::Whole(answer)) => return Ok(Some(to_json(&answer))),
                None => {}
            }
        }
    }

    /// The whole answer as JSON; see [`NativeGeneration::result`].
    fn read_all(&self, py: Python<'_>) -> PyResult<String> {
        loop {
            match self.read_part(py)? {
                Some(json) if self.reader().builder.is_done() => return Ok(json),
                Some(_) => {}
                None => return Err(self.cut_short()),
            }
        }
    }

    /// The error for a request whose events ended without `Done`.
    fn cut_short(&self) -> PyErr {
        if self.cancel.is_cancelled() {
            exception("HelixFlowError", "the generation was cancelled")
        } else {
            exception(
                "EngineStoppedError",
                "the engine stopped before the answer was complete",
            )
        }
    }
}

#[pymethods]
impl NativeGeneration {
    /// The next chunk as JSON, or `None` at the end (or once cancelled).
    fn next_chunk(&self, py: Python<'_>) -> PyResult<Option<String>> {
        no_panic(|| self.read_part(py))
    }

    /// Waits for the whole answer and returns it as JSON (a `chat.completion` or a
    /// `text_completion`).
    fn result(&self, py: Python<'_>) -> PyResult<String> {
        no_panic(|| self.read_all(py))
    }

    /// Cancels the request: the engine stops it at its next step and frees its memory.
    fn cancel(&self) {
        self.cancel.cancel();
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("response types serialise")
}

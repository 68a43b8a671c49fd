//! One submitted generation, read from Python as stream chunks or as a whole answer. A
//! blocking reader waits with the GIL released; an asyncio reader is called back on its event
//! loop ([`NativeGeneration::watch`]) from one thread shared by every awaited generation, so
//! no thread waits per request. Ctrl-C (KeyboardInterrupt) and dropping the object cancel the
//! request, which frees its KV blocks at the engine's next step.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
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

impl Reader {
    /// Shapes `event` into the answer's next part, as JSON (none for most events of a whole
    /// answer); the events are dropped once the answer is complete or has failed.
    /// (A core error, not a Python one: the waiting thread shapes under the lock, without
    /// the GIL.)
    fn shape(&mut self, event: EngineEvent) -> helixflow_core::Result<Option<String>> {
        let part = self.builder.push(event);
        if part.is_err() || self.builder.is_done() {
            self.events = None;
        }
        Ok(part?.map(part_json))
    }

    /// A part that an earlier event made beside the one [`Self::shape`] returned (one
    /// token may complete several chunks), as JSON.
    fn ready(&mut self) -> Option<String> {
        self.builder.pop_ready().map(part_json)
    }
}

fn part_json(part: AnswerPart) -> String {
    match part {
        AnswerPart::Chunk(chunk) => to_json(&chunk),
        AnswerPart::Whole(answer) => to_json(&answer),
    }
}

/// A running generation (`helixflow._native.NativeGeneration`).
#[pyclass(module = "helixflow._native", name = "NativeGeneration", frozen)]
pub(crate) struct NativeGeneration {
    cancel: CancelHandle,
    /// Shared with the task that delivers the parts of an awaited generation.
    reader: Arc<Mutex<Reader>>,
    /// When Python's signal handlers last ran for this request's caller.
    signals_checked: Mutex<Instant>,
}

impl NativeGeneration {
    pub(crate) fn new(events: RequestStream, builder: AnswerBuilder) -> Self {
        Self {
            cancel: events.cancel_handle(),
            reader: Arc::new(Mutex::new(Reader {
                events: Some(events),
                builder,
            })),
            signals_checked: Mutex::new(Instant::now()),
        }
    }

    fn reader(&self) -> MutexGuard<'_, Reader> {
        lock(&self.reader)
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
            if let Some(json) = self.reader().ready() {
                return Ok(Some(json));
            }
            if self.reader().builder.is_done() {
                return Ok(None);
            }
            let Some(event) = self.next_event(py)? else {
                return Ok(None);
            };
            let shaped = self.reader().shape(event);
            if let Some(json) = shaped.map_err(to_py)? {
                return Ok(Some(json));
            }
        }
    }

    /// The whole answer as JSON; see [`NativeGeneration::result`].
    fn read_all(&self, py: Python<'_>) -> PyResult<String> {
        loop {
            match self.read_part(py)? {
                Some(json) if self.reader().builder.is_done() => return Ok(json),
                Some(_) => {}
                None => return Err(cut_short(&self.cancel)),
            }
        }
    }
}

/// The error for a request whose events ended without `Done`.
fn cut_short(cancel: &CancelHandle) -> PyErr {
    if cancel.is_cancelled() {
        exception("HelixFlowError", "the generation was cancelled")
    } else {
        exception(
            "EngineStoppedError",
            "the engine stopped before the answer was complete",
        )
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

    /// Hands the answer's parts to `deliver` on the asyncio loop `event_loop` (through its
    /// `call_soon_threadsafe`) as they come: each part's JSON, then `None` at the end, or
    /// an exception instance. The waiting is a task on one thread that every awaited
    /// generation shares. A loop that has closed cancels the request.
    fn watch(&self, event_loop: Py<PyAny>, deliver: Py<PyAny>) -> PyResult<()> {
        let Some(events) = self.reader().events.take() else {
            return Err(exception(
                "HelixFlowError",
                "the generation is already being read",
            ));
        };
        let (reader, cancel) = (self.reader.clone(), self.cancel.clone());
        let hand = move |item: Delivery| {
            Python::attach(|py| {
                let item: Py<PyAny> = match item {
                    Delivery::Part(json) => json.into_pyobject(py).map(|s| s.into_any().unbind()),
                    Delivery::End => Ok(py.None()),
                    Delivery::Failed(error) => Ok(error.into_value(py).into_any()),
                }?;
                event_loop.call_method1(py, "call_soon_threadsafe", (&deliver, item))
            })
            .inspect_err(|_| cancel.cancel())
            .is_ok()
        };
        let cancel = self.cancel.clone();
        waiter().spawn(async move {
            loop {
                let Some(event) = events.recv_async().await else {
                    // A cancelled request simply ends: its task has already moved on.
                    let done = lock(&reader).builder.is_done() || cancel.is_cancelled();
                    hand(if done {
                        Delivery::End
                    } else {
                        Delivery::Failed(cut_short(&cancel))
                    });
                    return;
                };
                let (part, more, done) = {
                    let mut reader = lock(&reader);
                    let part = reader.shape(event);
                    let more: Vec<String> = std::iter::from_fn(|| reader.ready()).collect();
                    (part, more, reader.builder.is_done())
                };
                let parts = match part {
                    Err(e) => {
                        hand(Delivery::Failed(to_py(e)));
                        return;
                    }
                    Ok(first) => first.into_iter().chain(more),
                };
                for json in parts {
                    if !hand(Delivery::Part(json)) {
                        return;
                    }
                }
                if done {
                    hand(Delivery::End);
                    return;
                }
            }
        });
        Ok(())
    }
}

/// What [`NativeGeneration::watch`] hands to the event loop.
enum Delivery {
    Part(String),
    End,
    Failed(PyErr),
}

fn lock(reader: &Mutex<Reader>) -> MutexGuard<'_, Reader> {
    reader.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The one thread on which every awaited generation waits for its events.
fn waiter() -> &'static tokio::runtime::Handle {
    static WAITER: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    WAITER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a single-threaded runtime builds");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("helixflow-asyncio".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("the waiter thread starts");
        handle
    })
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("response types serialise")
}

//! One submitted generation, read from Python as stream chunks or as a whole answer. The GIL
//! is released while waiting for the engine; Ctrl-C (KeyboardInterrupt) and dropping the
//! object cancel the request, which frees its KV blocks at the engine's next step.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use helixflow_core::completion::{ChatCompletion, TextCompletion};
use helixflow_core::engine::{CancelHandle, EngineEvent, RequestStream};
use helixflow_core::streaming::{ChatChunker, ChoiceCollector, ChunkHeader, TextChunker};
use pyo3::prelude::*;

use crate::errors::{exception, no_panic, to_py};

/// How often a waiting call looks for signals (Ctrl-C) and cancellation.
const POLL: Duration = Duration::from_millis(50);

/// Whether the request is a chat or a text completion: what its answer and chunks look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Chat,
    Text,
}

/// What a generation shapes its events into.
pub(crate) struct Request {
    pub(crate) shape: Shape,
    pub(crate) header: ChunkHeader,
    pub(crate) n: usize,
    pub(crate) logprobs: bool,
    pub(crate) include_usage: bool,
}

enum Chunker {
    Chat(ChatChunker),
    Text(TextChunker),
}

/// The reading side's state.
struct Reader {
    events: Option<RequestStream>,
    chunker: Chunker,
    prompt_tokens: usize,
}

/// A running generation (`helixflow._native.NativeGeneration`).
#[pyclass(module = "helixflow._native", name = "NativeGeneration", frozen)]
pub(crate) struct NativeGeneration {
    request: Request,
    cancel: CancelHandle,
    reader: Mutex<Reader>,
    /// When Python's signal handlers last ran for this request's caller.
    signals_checked: Mutex<Instant>,
}

impl NativeGeneration {
    pub(crate) fn new(events: RequestStream, request: Request) -> Self {
        let chunker = match request.shape {
            Shape::Chat => Chunker::Chat(ChatChunker::new(request.header.clone(), request.n)),
            Shape::Text => Chunker::Text(TextChunker::new(request.header.clone(), request.n)),
        };
        Self {
            cancel: events.cancel_handle(),
            request,
            reader: Mutex::new(Reader {
                events: Some(events),
                chunker,
                prompt_tokens: 0,
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

    /// The next chunk as JSON; see [`NativeGeneration::next_chunk`].
    fn read_chunk(&self, py: Python<'_>) -> PyResult<Option<String>> {
        loop {
            let Some(event) = self.next_event(py)? else {
                return Ok(None);
            };
            let mut reader = self.reader();
            let json = match event {
                EngineEvent::Started { prompt_tokens } => {
                    reader.prompt_tokens = prompt_tokens;
                    None
                }
                EngineEvent::Token { choice, output } => match &mut reader.chunker {
                    Chunker::Chat(c) => c.token(choice, output).map(|c| to_json(&c)),
                    Chunker::Text(c) => c.token(choice, output).map(|c| to_json(&c)),
                },
                EngineEvent::Done { completion_tokens } => {
                    reader.events = None;
                    if !self.request.include_usage {
                        return Ok(None);
                    }
                    let usage = helixflow_core::completion::Usage::new(
                        reader.prompt_tokens,
                        completion_tokens,
                    );
                    Some(match &reader.chunker {
                        Chunker::Chat(c) => to_json(&c.usage(usage)),
                        Chunker::Text(c) => to_json(&c.usage(usage)),
                    })
                }
                EngineEvent::Failed(e) => {
                    reader.events = None;
                    return Err(to_py(e));
                }
            };
            if json.is_some() {
                return Ok(json);
            }
        }
    }

    /// The whole answer as JSON; see [`NativeGeneration::result`].
    fn read_all(&self, py: Python<'_>) -> PyResult<String> {
        let request = &self.request;
        let mut collector = ChoiceCollector::new(request.n, request.logprobs);
        let usage = loop {
            let Some(event) = self.next_event(py)? else {
                return Err(self.cut_short());
            };
            if let Some(usage) = collector.push(event).map_err(to_py)? {
                break usage;
            }
        };
        self.reader().events = None;
        let ChunkHeader { id, created, model } = request.header.clone();
        let choices = collector.into_choices();
        Ok(match request.shape {
            Shape::Chat => to_json(&ChatCompletion::new(id, created, model, choices, usage)),
            Shape::Text => to_json(&TextCompletion::new(id, created, model, choices, usage)),
        })
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
        no_panic(|| self.read_chunk(py))
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

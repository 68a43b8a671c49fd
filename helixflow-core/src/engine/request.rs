//! What a request gets back: a stream of events that cancels the request when dropped. A
//! blocking caller waits on it ([`RequestStream::recv`]); an async one awaits it
//! ([`RequestStream::recv_async`]) without a thread of its own, on any executor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flume::{Receiver, RecvTimeoutError, Sender};

use crate::generation::TokenOutput;
use crate::Error;

/// One event of a request, in order: `Started`, then `Token`s (choices interleaved), then
/// `Done`, or `Failed` at any point.
#[derive(Debug)]
pub enum EngineEvent {
    /// The request was admitted and its prompt scheduled.
    Started {
        /// Tokens in the prompt.
        prompt_tokens: usize,
    },
    /// A token of choice `choice`.
    Token {
        /// Index of the choice (0..n).
        choice: usize,
        /// The token, its text delta and, on the last one, the finish reason.
        output: TokenOutput,
    },
    /// Every choice has finished.
    Done {
        /// Tokens generated over all choices.
        completion_tokens: usize,
    },
    /// The request failed; no more events follow.
    Failed(Error),
}

/// The receiving end of a request. Dropping it cancels the request.
#[derive(Debug)]
pub struct RequestStream {
    events: Receiver<EngineEvent>,
    cancelled: Arc<AtomicBool>,
}

/// The engine's end of a request.
#[derive(Debug)]
pub(crate) struct EventSink {
    events: Sender<EngineEvent>,
    cancelled: Arc<AtomicBool>,
}

/// A connected sink and stream.
pub(crate) fn request_channel() -> (EventSink, RequestStream) {
    let (tx, rx) = flume::unbounded();
    let cancelled = Arc::new(AtomicBool::new(false));
    (
        EventSink {
            events: tx,
            cancelled: cancelled.clone(),
        },
        RequestStream {
            events: rx,
            cancelled,
        },
    )
}

impl RequestStream {
    /// The next event, waiting for it; `None` once the request is over.
    pub fn recv(&self) -> Option<EngineEvent> {
        self.events.recv().ok()
    }

    /// The next event, awaited; `None` once the request is over. The future holds no thread
    /// and needs no particular runtime.
    pub async fn recv_async(&self) -> Option<EngineEvent> {
        self.events.recv_async().await.ok()
    }

    /// The next event if one comes within `timeout`; `Err(true)` if the request is over,
    /// `Err(false)` on timeout.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<EngineEvent, bool> {
        self.events.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => false,
            RecvTimeoutError::Disconnected => true,
        })
    }

    /// Cancels the request now (dropping the stream does the same).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// A handle that cancels the request from elsewhere (another thread), while this stream
    /// is being read.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle(self.cancelled.clone())
    }
}

/// Cancels one request; see [`RequestStream::cancel_handle`].
#[derive(Debug, Clone)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    /// Cancels the request: the engine stops it at its next step and frees its KV blocks.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether the request has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl Iterator for RequestStream {
    type Item = EngineEvent;

    fn next(&mut self) -> Option<EngineEvent> {
        self.recv()
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl EventSink {
    /// Whether the caller has gone away.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Delivers an event; `false` if the caller has gone away.
    pub(crate) fn send(&self, event: EngineEvent) -> bool {
        !self.is_cancelled() && self.events.send(event).is_ok()
    }
}

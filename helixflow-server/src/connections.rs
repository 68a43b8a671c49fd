//! Connection limits, for HTTP and gRPC alike: a cap on open connections (beyond it a new
//! connection is closed at once, and that is logged), a deadline for a client to send its
//! request headers that also closes idle keep-alive connections, and HTTP/2 stream limits.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits every listener applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once on one listener.
    pub max_connections: usize,
    /// How long a connection may wait for a request's headers: a slow client sending them,
    /// or an idle keep-alive connection between requests; also the TLS handshake's limit.
    pub idle_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(15),
            max_concurrent_streams: 128,
        }
    }
}

/// Counts open connections on one listener and refuses those beyond the cap.
#[derive(Debug, Clone)]
pub struct ConnectionGate {
    permits: Arc<Semaphore>,
    refused: Arc<AtomicU64>,
    last_logged: Arc<AtomicU64>,
    what: &'static str,
}

impl ConnectionGate {
    /// A gate for `max` connections of the listener named `what` (for the log).
    pub fn new(max: usize, what: &'static str) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max.max(1))),
            refused: Arc::default(),
            last_logged: Arc::default(),
            what,
        }
    }

    /// A place for one more connection, or `None` (logged at most once a second) when
    /// every place is taken.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                if self.last_logged.swap(now, Ordering::Relaxed) != now {
                    tracing::warn!(
                        "{}: refusing connections: the limit of open connections is reached \
                         ({refused} refused so far; --max-connections)",
                        self.what
                    );
                }
                None
            }
        }
    }

    /// How many connections were refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// An acceptor that admits a connection through a [`ConnectionGate`] before handing it to
/// the inner acceptor (TLS, or none); a refused connection is closed at once.
#[derive(Debug, Clone)]
pub struct GatedAcceptor<A> {
    inner: A,
    gate: ConnectionGate,
    first_byte: Duration,
}

impl<A> GatedAcceptor<A> {
    /// `inner` behind `gate`; a connection whose client sends nothing within `first_byte`
    /// is closed.
    pub fn new(inner: A, gate: ConnectionGate, first_byte: Duration) -> Self {
        Self {
            inner,
            gate,
            first_byte,
        }
    }
}

impl<A, I, S> Accept<I, S> for GatedAcceptor<A>
where
    A: Accept<Admitted<I>, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future =
        Pin<Box<dyn std::future::Future<Output = io::Result<(A::Stream, A::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        match self.gate.admit() {
            Some(permit) => {
                let stream = Admitted::new(stream, permit, self.first_byte);
                Box::pin(self.inner.accept(stream, service))
            }
            None => {
                drop(stream);
                Box::pin(std::future::ready(Err(io::Error::other(
                    "too many open connections",
                ))))
            }
        }
    }
}

/// A connection holding its place in a [`ConnectionGate`] until it is closed, and closed if
/// its client sends nothing within the first-byte deadline (before its first request the
/// HTTP layer is still finding out which protocol it speaks, and sets no timer of its own).
#[derive(Debug)]
pub struct Admitted<I> {
    inner: I,
    _permit: OwnedSemaphorePermit,
    first_byte: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> Admitted<I> {
    /// `inner`, holding `permit`, closed unless its client sends a byte within `deadline`.
    pub fn new(inner: I, permit: OwnedSemaphorePermit, deadline: Duration) -> Self {
        Self {
            inner,
            _permit: permit,
            first_byte: Some(Box::pin(tokio::time::sleep(deadline))),
        }
    }

    /// The connection itself.
    pub fn get_ref(&self) -> &I {
        &self.inner
    }
}

impl<I: tonic::transport::server::Connected> tonic::transport::server::Connected for Admitted<I> {
    type ConnectInfo = I::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Admitted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(deadline) = this.first_byte.as_mut() {
            if read.is_ready() && buf.filled().len() > before {
                this.first_byte = None;
            } else if read.is_pending() && deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing",
                )));
            }
        }
        read
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Admitted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Applies `limits` to the HTTP/1 and HTTP/2 connections a server's builder makes.
pub fn configure(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    limits: &ConnectionLimits,
) {
    // More headers than the router accepts reach it, so that it refuses them in the API's
    // error shape instead of the HTTP layer with an empty body.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_headers(4 * crate::MAX_HEADERS);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(limits.idle_timeout)
        .keep_alive_timeout(limits.idle_timeout);
}

/// Raises this process's soft limit on open files to its hard limit, so that the connection
/// cap, not the operating system, decides when connections are refused; returns the soft
/// limit now in force.
#[cfg(unix)]
pub fn raise_open_files_limit() -> Option<u64> {
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                ..limit
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        Some(limit.rlim_cur)
    }
}

/// Elsewhere the limit is left as it is.
#[cfg(not(unix))]
pub fn raise_open_files_limit() -> Option<u64> {
    None
}

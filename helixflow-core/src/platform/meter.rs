//! The meter: what a server calls around every inference request, whatever the protocol.
//!
//! [`Meter::admit`] reserves the request's worst case against its key's limits (or refuses
//! it) and returns a [`Metered`] guard. The guard ends the request exactly once: with
//! [`Metered::finish`] (the real usage), [`Metered::fail`] / [`Metered::cancel`] (what it
//! processed and generated so far), [`Metered::discard`] (it never ran), or by being dropped
//! (the client went away: cancelled, charged for what it processed and generated). Ending
//! settles the reservation and records the usage, both off the request path; [`Meter::close`]
//! waits for every admitted request to be accounted for and flushes the records, so a graceful
//! shutdown loses nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{
    unix_now, Caller, LimitStatus, PlatformError, QuotaError, Reservation, Store, UsageRecord,
    UsageRecorder,
};

/// How often counters of ended windows are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// The status recorded for a request whose client went away.
pub const CLIENT_CLOSED: u16 = 499;

/// Quotas and usage accounting for a server; off without a store. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Meter {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    recorder: UsageRecorder,
    /// Admitted requests whose usage is not yet both recorded and settled.
    live: watch::Sender<usize>,
    /// Deletes counters of ended windows now and then.
    pruner: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.pruner.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

/// What an admitted request is, for its reservation and its usage record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteredRequest {
    /// The request's id (the response's `id`, or its `x-request-id`).
    pub request_id: Option<String>,
    /// The model.
    pub model: String,
    /// The endpoint (`/v1/chat/completions`, or the gRPC method).
    pub endpoint: String,
    /// Tokens in the prompt (or the inputs to embed).
    pub prompt_tokens: u64,
    /// The most tokens it may generate, over every choice.
    pub max_completion_tokens: u64,
}

impl Meter {
    /// A meter that admits everything and records nothing (no store).
    pub fn off() -> Self {
        Self::default()
    }

    /// Meters requests with `store`: quotas of its keys, usage records in batches. Starts
    /// the recorder on the current Tokio runtime.
    pub fn start(store: Store) -> Self {
        let recorder = UsageRecorder::start(store.clone());
        let pruner = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PRUNE_INTERVAL);
                loop {
                    tick.tick().await;
                    if let Err(e) = store.prune_quota_counters(unix_now()).await {
                        tracing::warn!("pruning quota counters failed: {e}");
                    }
                }
            })
        };
        Self {
            inner: Some(Arc::new(Inner {
                store,
                recorder,
                live: watch::Sender::new(0),
                pruner: Mutex::new(Some(pruner)),
            })),
        }
    }

    /// Whether requests are metered.
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// The usage recorder, when metering.
    pub fn recorder(&self) -> Option<&UsageRecorder> {
        self.inner.as_ref().map(|inner| &inner.recorder)
    }

    /// Admits `request` for `caller`, reserving its prompt and its most completion tokens
    /// against the caller's key's limits (the operator, users without a key, and keys without
    /// limits need no database work), or refuses it.
    pub async fn admit(
        &self,
        caller: &Caller,
        request: MeteredRequest,
    ) -> Result<Metered, QuotaError> {
        let reserves =
            self.inner.is_some() && caller.key().is_some_and(|k| !k.limits.is_unlimited());
        if !reserves {
            return self.admit_here(caller, request).await;
        }
        // The reservation runs in a task of its own: if the caller's future is dropped while it
        // waits on the database (the client went away), the task still finishes, and the guard
        // it made is dropped there, which gives the reservation back.
        let (meter, caller) = (self.clone(), caller.clone());
        tokio::spawn(async move { meter.admit_here(&caller, request).await })
            .await
            .map_err(|e| QuotaError::Interrupted(e.to_string()))?
    }

    async fn admit_here(
        &self,
        caller: &Caller,
        request: MeteredRequest,
    ) -> Result<Metered, QuotaError> {
        let progress = Arc::new(Progress::default());
        let Some(inner) = &self.inner else {
            return Ok(Metered {
                open: None,
                progress,
                limits: Vec::new(),
            });
        };
        let reservation = match caller.key() {
            Some(key) if !key.limits.is_unlimited() => {
                let tokens = request
                    .prompt_tokens
                    .saturating_add(request.max_completion_tokens);
                Some(inner.store.reserve(key, tokens, unix_now()).await?)
            }
            _ => None,
        };
        inner.live.send_modify(|n| *n += 1);
        let limits = reservation
            .as_ref()
            .map(|r| r.status().to_vec())
            .unwrap_or_default();
        let record = UsageRecord {
            request_id: request.request_id,
            key_id: caller.key().map(|k| k.id.clone()),
            user_id: caller.user_id().map(str::to_string),
            model: request.model,
            endpoint: request.endpoint,
            prompt_tokens: request.prompt_tokens,
            completion_tokens: 0,
            status: 200,
            cancelled: false,
            ttft_ms: None,
            latency_ms: 0,
            created_at: 0,
        };
        Ok(Metered {
            open: Some(Box::new(Open {
                inner: inner.clone(),
                reservation,
                record,
                runtime: Handle::current(),
            })),
            progress,
            limits,
        })
    }

    /// Waits (at most `wait`) until every admitted request is recorded and settled, then
    /// stores the last records and stops. For a graceful shutdown, after the servers drained.
    pub async fn close(&self, wait: Duration) -> Result<(), PlatformError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let mut live = inner.live.subscribe();
        if tokio::time::timeout(wait, live.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!(
                "{} requests were still running when usage accounting closed",
                *inner.live.borrow()
            );
        }
        let pruner = inner
            .pruner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = pruner {
            task.abort();
        }
        inner.recorder.close().await
    }
}

/// A running request's progress, counted where its work is done (so that a cancelled request
/// is charged for what it processed and every token it generated, sent or not).
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    prompt_processed: AtomicBool,
    completion_tokens: AtomicU64,
    first_token: OnceLock<Duration>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            prompt_processed: AtomicBool::new(false),
            completion_tokens: AtomicU64::new(0),
            first_token: OnceLock::new(),
        }
    }
}

impl Progress {
    /// The prompt went to the model: a request cut off from now on pays for it.
    pub fn prompt(&self) {
        self.prompt_processed.store(true, Ordering::Relaxed);
    }

    /// Counts one generated token (the first also fixes the time to first token).
    pub fn token(&self) {
        self.first_token.get_or_init(|| self.started.elapsed());
        self.completion_tokens.fetch_add(1, Ordering::Relaxed);
    }

    /// Tokens generated so far.
    pub fn completion_tokens(&self) -> u64 {
        self.completion_tokens.load(Ordering::Relaxed)
    }
}

/// An admitted request, until it ends; dropping it unended counts as cancelled.
#[derive(Debug)]
pub struct Metered {
    open: Option<Box<Open>>,
    progress: Arc<Progress>,
    limits: Vec<LimitStatus>,
}

#[derive(Debug)]
struct Open {
    inner: Arc<Inner>,
    reservation: Option<Reservation>,
    /// The record, filled in when the request ends.
    record: UsageRecord,
    /// Where the settlement runs (the guard may be dropped outside the runtime's context).
    runtime: Handle,
}

/// Counts a request out of [`Inner::live`] when dropped, whether its settlement ran or not.
struct Live(Arc<Inner>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Metered {
    /// The request's progress, for whoever sees its prompt and tokens processed.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The key's standing against its limits after admission (empty without limits).
    pub fn limits(&self) -> &[LimitStatus] {
        &self.limits
    }

    /// The request ended normally, using these tokens.
    pub fn finish(mut self, prompt_tokens: u64, completion_tokens: u64) {
        self.end(Some(prompt_tokens), Some(completion_tokens), 200, false);
    }

    /// The request ended with an error (an HTTP `status`): charged for what it processed
    /// and generated.
    pub fn fail(mut self, status: u16) {
        self.end(None, None, status, false);
    }

    /// The request was cut off (an HTTP `status`, like 504 for the timeout): charged for
    /// what it processed and generated, and recorded as cancelled.
    pub fn cancel(mut self, status: u16) {
        self.end(None, None, status, true);
    }

    /// The request never ran (the engine refused it): its tokens are given back and no usage
    /// is recorded.
    pub fn discard(mut self) {
        if let Some(open) = self.open.take() {
            let Open {
                inner,
                reservation,
                runtime,
                ..
            } = *open;
            settle(runtime, Live(inner), reservation, 0);
        }
    }

    /// Records the usage and settles the reservation, both off the caller's path. Unknown
    /// counts are what the request's progress says: its prompt if it was processed, and the
    /// tokens generated so far.
    fn end(
        &mut self,
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
        status: u16,
        cancelled: bool,
    ) {
        let Some(open) = self.open.take() else {
            return;
        };
        let Open {
            inner,
            reservation,
            mut record,
            runtime,
        } = *open;
        let progress = &self.progress;
        let processed = progress.prompt_processed.load(Ordering::Relaxed);
        record.prompt_tokens =
            prompt_tokens.unwrap_or(if processed { record.prompt_tokens } else { 0 });
        record.completion_tokens =
            completion_tokens.unwrap_or_else(|| progress.completion_tokens());
        record.status = status;
        record.cancelled = cancelled;
        record.ttft_ms = progress.first_token.get().map(|d| millis(*d));
        record.latency_ms = millis(progress.started.elapsed());
        record.created_at = unix_now();
        let actual = record
            .prompt_tokens
            .saturating_add(record.completion_tokens);
        inner.recorder.record(record);
        settle(runtime, Live(inner), reservation, actual);
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.end(None, None, CLIENT_CLOSED, true);
    }
}

/// Settles `reservation` to `actual` tokens on `runtime`; `live` counts the request out when
/// that is done (or abandoned by a runtime shutting down).
fn settle(runtime: Handle, live: Live, reservation: Option<Reservation>, actual: u64) {
    let Some(reservation) = reservation else {
        return; // `live` drops here: nothing to settle
    };
    runtime.spawn(async move {
        if let Err(e) = live.0.store.settle(&reservation, actual).await {
            tracing::warn!("settling a quota reservation failed: {e}");
        }
        drop(live);
    });
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

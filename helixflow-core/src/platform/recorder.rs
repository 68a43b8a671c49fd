//! The usage recorder: requests hand their records to a channel without waiting, and one task
//! stores them in batches, at least every [`FLUSH_INTERVAL`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{PlatformError, Store, UsageRecord};

/// How often buffered records are stored: what a hard kill can lose at most.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// Records buffered before a batch is stored early.
const BATCH: usize = 1_000;

/// Records kept while the database refuses writes; past it the oldest are dropped (and
/// logged), so that an outage cannot exhaust memory.
const MAX_BUFFERED: usize = 200_000;

enum Command {
    Record(UsageRecord),
    Flush(oneshot::Sender<Result<(), PlatformError>>),
    Close(oneshot::Sender<Result<(), PlatformError>>),
}

/// Stores usage records in batches off the request path; cheap to clone.
#[derive(Clone, Debug)]
pub struct UsageRecorder {
    commands: mpsc::UnboundedSender<Command>,
    /// The batching task, until [`UsageRecorder::close`] has waited for it.
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl UsageRecorder {
    /// Starts the batching task on the current Tokio runtime, storing every
    /// [`FLUSH_INTERVAL`].
    pub fn start(store: Store) -> Self {
        Self::with_interval(store, FLUSH_INTERVAL)
    }

    /// [`UsageRecorder::start`] with another flush interval.
    pub fn with_interval(store: Store, interval: Duration) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(store, rx, interval));
        Self {
            commands,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// Queues a record without waiting; `false` (and a warning) once the recorder is closed.
    pub fn record(&self, record: UsageRecord) -> bool {
        let sent = self.commands.send(Command::Record(record)).is_ok();
        if !sent {
            tracing::warn!("a usage record arrived after the recorder closed and is lost");
        }
        sent
    }

    /// Stores every record queued before this call.
    pub async fn flush(&self) -> Result<(), PlatformError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Flush(reply))
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Stores every record queued before this call and stops; later records are refused.
    /// Closing twice is harmless.
    pub async fn close(&self) -> Result<(), PlatformError> {
        let (reply, answer) = oneshot::channel();
        let result = match self.commands.send(Command::Close(reply)) {
            Ok(()) => answer.await.unwrap_or(Ok(())),
            Err(_) => Ok(()),
        };
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        result
    }
}

fn closed() -> PlatformError {
    PlatformError::invalid("the usage recorder is closed")
}

/// The batching task: buffers records, stores them every `interval`, when a batch is full,
/// and on flush and close.
async fn run(store: Store, mut commands: mpsc::UnboundedReceiver<Command>, interval: Duration) {
    let mut buffer: Vec<UsageRecord> = Vec::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Record(record)) => {
                    buffer.push(record);
                    if buffer.len() >= BATCH {
                        let _ = store_batch(&store, &mut buffer).await;
                    }
                }
                Some(Command::Flush(reply)) => {
                    let _ = reply.send(store_batch(&store, &mut buffer).await);
                }
                Some(Command::Close(reply)) => {
                    commands.close();
                    // Records queued before the close are still in the channel.
                    while let Ok(command) = commands.try_recv() {
                        if let Command::Record(record) = command {
                            buffer.push(record);
                        }
                    }
                    let _ = reply.send(store_batch(&store, &mut buffer).await);
                    return;
                }
                None => {
                    let _ = store_batch(&store, &mut buffer).await;
                    return;
                }
            },
            _ = tick.tick() => {
                if !buffer.is_empty() {
                    let _ = store_batch(&store, &mut buffer).await;
                }
            }
        }
    }
}

/// Stores and empties `buffer`; on failure the records stay for the next attempt.
async fn store_batch(store: &Store, buffer: &mut Vec<UsageRecord>) -> Result<(), PlatformError> {
    match store.insert_usage(buffer).await {
        Ok(()) => {
            buffer.clear();
            Ok(())
        }
        Err(e) => {
            tracing::warn!("storing {} usage records failed: {e}", buffer.len());
            if buffer.len() > MAX_BUFFERED {
                let lost = buffer.len() - MAX_BUFFERED;
                buffer.drain(..lost);
                tracing::error!("dropped {lost} usage records: the database refuses writes");
            }
            Err(e)
        }
    }
}

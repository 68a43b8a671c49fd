//! The serving engine: many requests share one model through continuous batching over the
//! paged KV cache.
//!
//! [`Engine::start`] runs the loop on its own thread and returns a clonable [`EngineHandle`].
//! Requests go in through a bounded queue ([`EngineHandle::submit`]); each returns a
//! [`RequestStream`] of [`EngineEvent`]s. Dropping the stream cancels the request at the next
//! step and frees its KV blocks. Each step, a [`SchedulingPolicy`] picks the work: running
//! decodes first, then prompt chunks under a token budget; when KV blocks run out the newest
//! request is preempted and recomputed later.

mod config;
mod handle;
mod policy;
mod request;
mod stats;
mod worker;

pub use config::{EngineConfig, KvBudget};
pub use handle::{Engine, EngineHandle};
pub use policy::{FcfsPolicy, RunningSeq, SchedulingPolicy, WaitingRequest};
pub use request::{CancelHandle, EngineEvent, RequestStream};
pub use stats::EngineStats;

//! The registry's table of models, loaded or loading, and the decisions made on it under its
//! lock: what is in use, what may be evicted for room, what has been idle too long.

use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use super::footprint::Footprint;
use super::keep_alive::KeepAlive;
use super::ServedModel;
use crate::Error;

/// How a load ended, for the requests that waited on it.
pub(super) type LoadOutcome = Arc<OnceLock<Result<(), LoadFailure>>>;

/// Why a load failed, as each request that waited on it is told.
#[derive(Debug, Clone)]
pub(super) enum LoadFailure {
    /// No room within the memory budget: the same 503 for every waiter.
    NoRoom {
        needed: u64,
        free: u64,
        budget: u64,
        retry_after_secs: u64,
    },
    /// Anything else, by its message.
    Other(String),
}

impl LoadFailure {
    pub(super) fn of(error: &Error) -> Self {
        match error {
            Error::NoRoom {
                needed,
                free,
                budget,
                retry_after_secs,
                ..
            } => Self::NoRoom {
                needed: *needed,
                free: *free,
                budget: *budget,
                retry_after_secs: *retry_after_secs,
            },
            other => Self::Other(other.to_string()),
        }
    }

    /// The error a waiter for `model` gets.
    pub(super) fn error(&self, model: &str) -> Error {
        match self {
            Self::NoRoom {
                needed,
                free,
                budget,
                retry_after_secs,
            } => Error::NoRoom {
                model: model.to_string(),
                needed: *needed,
                free: *free,
                budget: *budget,
                retry_after_secs: *retry_after_secs,
            },
            Self::Other(reason) => Error::ModelLoadFailed {
                model: model.to_string(),
                reason: reason.clone(),
            },
        }
    }
}

/// Where a model stands.
pub(super) enum SlotState {
    /// Being loaded by one request; others wait for `outcome`.
    Loading(LoadOutcome),
    /// Serving.
    Ready(ServedModel),
}

/// One model in the table.
pub(super) struct Slot {
    pub(super) id: String,
    pub(super) state: SlotState,
    /// Reserved from the memory budget (while loading: once the files are known).
    pub(super) footprint: Footprint,
    /// Requests holding the model ([`super::ModelLease`]s).
    pub(super) leases: usize,
    /// How long it stays once idle.
    pub(super) keep_alive: KeepAlive,
    /// Unload once idle (asked for by hand while requests were in flight).
    pub(super) unload_when_idle: bool,
    /// Whether the registry can load it again (from a source it knows): a model added
    /// directly is never evicted or expired.
    pub(super) reloadable: bool,
    /// When its last request ended (or it was loaded).
    pub(super) idle_since: Instant,
    /// The same, as wall-clock time, for listings.
    pub(super) last_used: SystemTime,
    pub(super) loaded_at: SystemTime,
    /// Requests it has served since it was loaded.
    pub(super) requests: u64,
}

impl Slot {
    /// A slot for a model that is about to be loaded.
    pub(super) fn loading(id: &str, outcome: LoadOutcome, keep_alive: KeepAlive) -> Self {
        Self::new(id, SlotState::Loading(outcome), keep_alive, true)
    }

    /// A slot for a loaded model.
    pub(super) fn ready(model: ServedModel, keep_alive: KeepAlive, reloadable: bool) -> Self {
        let id = model.id().to_string();
        Self::new(&id, SlotState::Ready(model), keep_alive, reloadable)
    }

    fn new(id: &str, state: SlotState, keep_alive: KeepAlive, reloadable: bool) -> Self {
        Self {
            id: id.to_string(),
            state,
            footprint: Footprint::default(),
            leases: 0,
            keep_alive,
            unload_when_idle: false,
            reloadable,
            idle_since: Instant::now(),
            last_used: SystemTime::now(),
            loaded_at: SystemTime::now(),
            requests: 0,
        }
    }

    /// The model, once loaded.
    pub(super) fn model(&self) -> Option<&ServedModel> {
        match &self.state {
            SlotState::Ready(model) => Some(model),
            SlotState::Loading(_) => None,
        }
    }

    /// Loaded, with no request holding it.
    fn idle(&self) -> bool {
        self.leases == 0 && self.model().is_some()
    }

    /// When an idle model is due to be unloaded; `None` while it is in use or kept forever.
    pub(super) fn expires_at(&self) -> Option<Instant> {
        if !self.idle() || !(self.reloadable || self.unload_when_idle) {
            return None;
        }
        if self.unload_when_idle {
            return Some(self.idle_since);
        }
        self.keep_alive.duration().map(|d| self.idle_since + d)
    }
}

/// Every model loaded or loading, in the order they came.
#[derive(Default)]
pub(super) struct Slots {
    pub(super) slots: Vec<Slot>,
}

impl Slots {
    pub(super) fn position(&self, id: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id)
    }

    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.id == id)
    }

    /// Bytes reserved by every model but `except`.
    pub(super) fn reserved_except(&self, except: &str) -> u64 {
        self.slots
            .iter()
            .filter(|s| s.id != except)
            .map(|s| s.footprint.total())
            .sum()
    }

    /// Bytes reserved by every model.
    pub(super) fn reserved(&self) -> u64 {
        self.reserved_except("")
    }

    /// Evicts idle models, least recently used first, until `needed` more bytes fit within
    /// `budget` beside every model but `for_id`; returns them for the caller to drop outside
    /// the lock. When even evicting every idle model would not make room, evicts nothing and
    /// returns the bytes that could be had.
    pub(super) fn make_room(
        &mut self,
        for_id: &str,
        needed: u64,
        budget: u64,
    ) -> Result<Vec<ServedModel>, u64> {
        let reserved = self.reserved_except(for_id);
        let evictable = |s: &Slot| s.id != for_id && s.idle() && s.reloadable;
        let could_free: u64 = self
            .slots
            .iter()
            .filter(|s| evictable(s))
            .map(|s| s.footprint.total())
            .sum();
        let free_now = budget.saturating_sub(reserved);
        if needed <= free_now {
            return Ok(Vec::new());
        }
        let obtainable = free_now + could_free;
        if needed > obtainable {
            return Err(obtainable);
        }
        let mut order: Vec<(Instant, String)> = self
            .slots
            .iter()
            .filter(|s| evictable(s))
            .map(|s| (s.idle_since, s.id.clone()))
            .collect();
        order.sort();
        let mut evicted = Vec::new();
        for (_, id) in order {
            if needed <= budget.saturating_sub(self.reserved_except(for_id)) {
                break;
            }
            evicted.extend(self.remove(&id));
        }
        Ok(evicted)
    }

    /// Removes the idle models whose time is up; returns them and when the next one is due.
    pub(super) fn expire(&mut self, now: Instant) -> (Vec<ServedModel>, Option<Instant>) {
        let due: Vec<String> = self
            .slots
            .iter()
            .filter(|s| s.expires_at().is_some_and(|at| at <= now))
            .map(|s| s.id.clone())
            .collect();
        let gone = due.iter().filter_map(|id| self.remove(id)).collect();
        let next = self.slots.iter().filter_map(Slot::expires_at).min();
        (gone, next)
    }

    /// Takes a model out of the table.
    pub(super) fn remove(&mut self, id: &str) -> Option<ServedModel> {
        let at = self.position(id)?;
        match self.slots.remove(at).state {
            SlotState::Ready(model) => Some(model),
            SlotState::Loading(_) => None,
        }
    }
}

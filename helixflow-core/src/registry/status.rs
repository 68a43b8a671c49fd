//! What listings say of the registry's models.

use std::time::{Instant, SystemTime};

use super::slots::Slot;
use super::{Footprint, ServedModel};
use crate::source::ModelKind;

/// Where a model stands, as listings show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    /// Serving.
    Loaded,
    /// Being loaded.
    Loading,
    /// Not loaded; a request for it loads it.
    Available,
}

impl ModelState {
    /// `loaded`, `loading` or `available`, as every front end writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loaded => "loaded",
            Self::Loading => "loading",
            Self::Available => "available",
        }
    }
}

/// One model in a listing ([`ModelRegistry::list`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelStatus {
    /// The id requests name it by.
    pub id: String,
    /// Loaded, loading or available.
    pub state: ModelState,
    /// Chat or embedding, once known.
    pub kind: Option<ModelKind>,
    /// The memory it takes (estimated; zero while unknown).
    pub footprint: Footprint,
    /// Requests holding it now.
    pub in_flight: usize,
    /// Requests it has served since it was loaded.
    pub requests: u64,
    /// When it was loaded (Unix seconds).
    pub loaded_at: Option<u64>,
    /// When its last request ended, or it was loaded (Unix seconds).
    pub last_used: Option<u64>,
    /// When it will be unloaded if it stays idle (Unix seconds); `None`: not while in use or
    /// kept forever.
    pub expires_at: Option<u64>,
}

/// What [`ModelRegistry::unload`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unloaded {
    /// The model is gone.
    Now,
    /// It has requests in flight: it goes when the last one ends (it serves new requests
    /// until then).
    WhenIdle {
        /// The requests in flight.
        in_flight: usize,
    },
}

/// How much of the memory budget the loaded models take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemoryUse {
    /// Bytes reserved by the models loaded and loading.
    pub reserved_bytes: u64,
    /// The budget; `None`: no bound.
    pub budget_bytes: Option<u64>,
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(super) fn status_of(slot: &Slot) -> ModelStatus {
    let model = slot.model();
    let expires_at = slot.expires_at().map(|at| {
        let left = at.saturating_duration_since(Instant::now());
        unix(SystemTime::now() + left)
    });
    ModelStatus {
        id: slot.id.clone(),
        state: if model.is_some() {
            ModelState::Loaded
        } else {
            ModelState::Loading
        },
        kind: model.map(ServedModel::kind),
        footprint: slot.footprint,
        in_flight: slot.leases,
        requests: slot.requests,
        loaded_at: model.map(|_| unix(slot.loaded_at)),
        last_used: model.map(|_| unix(slot.last_used)),
        expires_at,
    }
}

impl ModelStatus {
    pub(super) fn available(id: String, kind: Option<ModelKind>) -> Self {
        Self {
            id,
            state: ModelState::Available,
            kind,
            footprint: Footprint::default(),
            in_flight: 0,
            requests: 0,
            loaded_at: None,
            last_used: None,
            expires_at: None,
        }
    }
}

//! Who is calling: the operator's static key, or a key from the store. Lookups are cached in
//! process for at most [`CACHE_TTL`], so a key revoked on one replica is refused by every
//! replica sharing the database within that window (and at once on the replica that revoked
//! it, which forgets the key).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{ApiKey, PlatformError, Scope, Store};

/// How long a lookup is trusted: the revocation window across replicas.
pub const CACHE_TTL: Duration = Duration::from_secs(1);

/// Cached lookups kept at most; past it the cache starts over (bounded memory under a flood
/// of made-up keys).
const CACHE_CAPACITY: usize = 10_000;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The operator's static key (`--api-key`), or anyone when no authentication is
    /// configured: every scope, every model.
    Operator,
    /// A key from the store.
    Key(Box<ApiKey>),
}

impl Caller {
    /// Whether the caller has `scope`.
    pub fn has_scope(&self, scope: Scope) -> bool {
        match self {
            Caller::Operator => true,
            Caller::Key(key) => key.has_scope(scope),
        }
    }

    /// Whether the caller may use `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        match self {
            Caller::Operator => true,
            Caller::Key(key) => key.allows_model(model),
        }
    }

    /// The store key the caller presented, if any (quotas and usage are kept per key).
    pub fn key(&self) -> Option<&ApiKey> {
        match self {
            Caller::Operator => None,
            Caller::Key(key) => Some(key),
        }
    }

    /// The id of the user the caller acts for, if any (a logged-in user; usage records
    /// carry it).
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Caller::Operator => None,
            Caller::Key(_) => None,
        }
    }

    /// A name safe to log: the key's public prefix, or `operator`.
    pub fn label(&self) -> &str {
        match self {
            Caller::Operator => "operator",
            Caller::Key(key) => &key.prefix,
        }
    }
}

/// A cached lookup: when it was made, and the key (`None`: no such active key).
type Lookup = (Instant, Option<ApiKey>);

/// Checks presented bearer tokens against the operator key and the store.
#[derive(Debug)]
pub struct Authenticator {
    store: Option<Store>,
    operator_key: Option<String>,
    cache: Mutex<HashMap<[u8; 32], Lookup>>,
}

impl Authenticator {
    /// Authentication by the operator key and/or the store's keys; with neither, everyone is
    /// the operator (a server on loopback for one user).
    pub fn new(store: Option<Store>, operator_key: Option<String>) -> Self {
        Self {
            store,
            operator_key: operator_key.filter(|k| !k.is_empty()),
            cache: Mutex::default(),
        }
    }

    /// Whether requests must present a key.
    pub fn required(&self) -> bool {
        self.store.is_some() || self.operator_key.is_some()
    }

    /// The store, if keys come from one.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// The caller presenting `token` (the bearer token, if any); `None` for a missing,
    /// unknown, revoked or expired key.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Option<Caller>, PlatformError> {
        if !self.required() {
            return Ok(Some(Caller::Operator));
        }
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if let Some(operator) = &self.operator_key {
            if constant_time_eq(token.as_bytes(), operator.as_bytes()) {
                return Ok(Some(Caller::Operator));
            }
        }
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(cached) = self.cached(&digest) {
            return Ok(cached.map(|k| Caller::Key(Box::new(k))));
        }
        let key = store.verify_key(token).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(digest, (Instant::now(), key.clone()));
        Ok(key.map(|k| Caller::Key(Box::new(k))))
    }

    /// Forgets every cached lookup of key `id` (after revoking it here).
    pub fn forget(&self, id: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, (_, key)| key.as_ref().is_none_or(|k| k.id != id));
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Option<ApiKey>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (at, key) = cache.get(digest)?;
        // Expiry is checked again: a cached key may expire within the window.
        let now = super::unix_now();
        (at.elapsed() < CACHE_TTL).then(|| key.clone().filter(|k| k.is_active(now)))
    }
}

/// Compares without an early exit on the first difference.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_is_exact() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret-longer", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(constant_time_eq(b"", b""));
    }
}

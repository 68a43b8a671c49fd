//! Who is calling: the operator's static key, a key from the store, or a user's access token
//! (a JWT from a login). Lookups are cached in process for at most [`CACHE_TTL`], so a key or
//! token revoked on one replica (or a user disabled there) is refused by every replica sharing
//! the database within that window, and at once on the replica that revoked it, which
//! forgets it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::tokens::{looks_like_jwt, SigningKey};
use super::{unix_now, ApiKey, LoginPolicy, PlatformError, Scope, Store, UserSession};

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
    /// A user presenting an access token from a login: their scopes, every model.
    User(Box<UserSession>),
}

impl Caller {
    /// Whether the caller has `scope`.
    pub fn has_scope(&self, scope: Scope) -> bool {
        match self {
            Caller::Operator => true,
            Caller::Key(key) => key.has_scope(scope),
            Caller::User(session) => session.has_scope(scope),
        }
    }

    /// Whether the caller may use `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        match self {
            Caller::Operator | Caller::User(_) => true,
            Caller::Key(key) => key.allows_model(model),
        }
    }

    /// The store key the caller presented, if any (quotas and usage are kept per key).
    pub fn key(&self) -> Option<&ApiKey> {
        match self {
            Caller::Operator | Caller::User(_) => None,
            Caller::Key(key) => Some(key),
        }
    }

    /// The id of the user the caller acts for, if any (a logged-in user; usage records
    /// carry it).
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Caller::Operator | Caller::Key(_) => None,
            Caller::User(session) => Some(&session.user_id),
        }
    }

    /// The logged-in user's session, if the caller presented an access token.
    pub fn session(&self) -> Option<&UserSession> {
        match self {
            Caller::User(session) => Some(session),
            Caller::Operator | Caller::Key(_) => None,
        }
    }

    /// A name safe to log: the key's public prefix, the username, or `operator`.
    pub fn label(&self) -> &str {
        match self {
            Caller::Operator => "operator",
            Caller::Key(key) => &key.prefix,
            Caller::User(session) => &session.username,
        }
    }

    /// Whether the caller may still be trusted at `now` (a cached key or token may expire
    /// within the cache window).
    fn is_live(&self, now: i64) -> bool {
        match self {
            Caller::Operator => true,
            Caller::Key(key) => key.is_active(now),
            Caller::User(session) => session.is_live(now),
        }
    }
}

/// A cached lookup: when it was made, and the caller (`None`: no such active key or token).
type Lookup = (Instant, Option<Caller>);

/// Checks presented bearer tokens against the operator key and the store's keys and access
/// tokens.
#[derive(Debug)]
pub struct Authenticator {
    store: Option<Store>,
    operator_key: Option<String>,
    /// How logins are limited and how long their tokens last.
    policy: LoginPolicy,
    /// The store's token signing key, read once (it never changes).
    signing_key: OnceCell<SigningKey>,
    cache: Mutex<HashMap<[u8; 32], Lookup>>,
    /// Bumped by every `forget_*`: a lookup that started before a revocation here must not
    /// cache what it read (the row as it was before the revocation).
    generation: AtomicU64,
}

impl Authenticator {
    /// Authentication by the operator key and/or the store's keys and access tokens; with
    /// neither, everyone is the operator (a server on loopback for one user).
    pub fn new(store: Option<Store>, operator_key: Option<String>) -> Self {
        Self {
            store,
            operator_key: operator_key.filter(|k| !k.is_empty()),
            policy: LoginPolicy::default(),
            signing_key: OnceCell::new(),
            cache: Mutex::default(),
            generation: AtomicU64::new(0),
        }
    }

    /// The same authenticator with another login policy (token lifetime, failed-login
    /// limit); an out-of-bounds policy is refused.
    pub fn with_login_policy(mut self, policy: LoginPolicy) -> Result<Self, PlatformError> {
        policy.validate()?;
        self.policy = policy;
        Ok(self)
    }

    /// How logins are limited and how long their tokens last.
    pub fn login_policy(&self) -> &LoginPolicy {
        &self.policy
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
    /// unknown, revoked or expired key or access token, or one of a disabled user.
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
            return Ok(cached);
        }
        // Tokens with control characters are no key's (and PostgreSQL refuses NUL bytes).
        if token.chars().any(char::is_control) {
            return Ok(None);
        }
        let (generation, looked_up) = (self.generation.load(Ordering::SeqCst), Instant::now());
        let caller = if looks_like_jwt(token) {
            let key = self
                .signing_key
                .get_or_try_init(|| store.signing_key())
                .await?;
            store
                .verify_token_with(key, token)
                .await?
                .map(|session| Caller::User(Box::new(session)))
        } else {
            store
                .verify_key(token)
                .await?
                .map(|key| Caller::Key(Box::new(key)))
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        // A revocation here since the lookup began: what was read may predate it, so it
        // answers this request (which raced the revocation) but is not kept for later ones.
        if self.generation.load(Ordering::SeqCst) != generation {
            return Ok(caller);
        }
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        // Aged from the lookup's start, so that an entry never outlives the window.
        cache.insert(digest, (looked_up, caller.clone()));
        Ok(caller)
    }

    /// Forgets every cached lookup of key `id` (after revoking it here).
    pub fn forget(&self, id: &str) {
        self.forget_where(|caller| caller.key().is_some_and(|k| k.id == id));
    }

    /// Forgets every cached lookup of access token `jti` (after revoking it here).
    pub fn forget_token(&self, jti: &str) {
        self.forget_where(|caller| caller.session().is_some_and(|s| s.jti == jti));
    }

    /// Forgets every cached lookup of user `user_id`'s tokens (after disabling them here).
    pub fn forget_user(&self, user_id: &str) {
        self.forget_where(|caller| caller.user_id() == Some(user_id));
    }

    fn forget_where(&self, matches: impl Fn(&Caller) -> bool) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        cache.retain(|_, (_, caller)| !caller.as_ref().is_some_and(&matches));
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Option<Caller>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (at, caller) = cache.get(digest)?;
        // Expiry is checked again: a cached key or token may expire within the window.
        let now = unix_now();
        (at.elapsed() < CACHE_TTL).then(|| caller.clone().filter(|c| c.is_live(now)))
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

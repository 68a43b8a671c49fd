//! API keys: made with a CSPRNG, shown once, stored only as a SHA-256 hash, found by a
//! non-secret prefix and compared in constant time.
//!
//! A key reads `hfk_<prefix>_<secret>`: twelve and thirty-two base-62 characters (about 262
//! random bits in all). Keys are random, not chosen by people, so a plain SHA-256 is enough to
//! make a leaked table useless; a slow password hash would only slow every request.

use rand::Rng;
use sha2::{Digest, Sha256};

use super::auth::constant_time_eq;
use super::store::on_pool;
use super::{unix_now, PlatformError, Store};

const KEY_TAG: &str = "hfk_";
const PREFIX_CHARS: usize = 12;
const SECRET_CHARS: usize = 32;
const NO_KEY_HASH: &str = "----------------------------------------------------------------";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Scope {
    /// Completions, embeddings, models.
    Inference,
    /// Keys, users, usage reports, monitoring.
    Admin,
}

impl Scope {
    /// The scope's name, as stored and as the CLI takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Inference => "inference",
            Scope::Admin => "admin",
        }
    }

    /// Parses `inference` or `admin`.
    pub fn parse(name: &str) -> Result<Self, PlatformError> {
        match name.trim() {
            "inference" => Ok(Scope::Inference),
            "admin" => Ok(Scope::Admin),
            other => Err(PlatformError::invalid(format!(
                "unknown scope `{other}`: use inference or admin"
            ))),
        }
    }
}

/// The period a token budget covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BudgetPeriod {
    /// A UTC day.
    Day,
    /// A UTC calendar month.
    Month,
}

impl BudgetPeriod {
    /// The period's name, as stored and as the CLI takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Month => "month",
        }
    }

    /// Parses `day` or `month`.
    pub fn parse(name: &str) -> Result<Self, PlatformError> {
        match name {
            "day" => Ok(BudgetPeriod::Day),
            "month" => Ok(BudgetPeriod::Month),
            other => Err(PlatformError::invalid(format!(
                "unknown budget period `{other}`: use day or month"
            ))),
        }
    }
}

/// A key's limits; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyLimits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute.
    pub tpm: Option<u64>,
    /// Tokens per budget period.
    pub budget_tokens: Option<u64>,
    /// The period of `budget_tokens`.
    pub budget_period: Option<BudgetPeriod>,
}

/// What a new key should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// A human-readable name.
    pub name: String,
    /// Who the key belongs to (a user name, a team), if anyone.
    pub owner: Option<String>,
    /// What it may do; at least one scope.
    pub scopes: Vec<Scope>,
    /// The models it may use; `None` is every model.
    pub models: Option<Vec<String>>,
    /// Its rate limits and budget.
    pub limits: KeyLimits,
    /// When it stops working (Unix seconds), if ever.
    pub expires_at: Option<i64>,
}

impl NewKey {
    /// An inference key named `name`, unlimited, for every model, never expiring.
    pub fn inference(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            owner: None,
            scopes: vec![Scope::Inference],
            models: None,
            limits: KeyLimits::default(),
            expires_at: None,
        }
    }
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKey {
    /// Stable id (`key_...`), for listing and revocation.
    pub id: String,
    /// The key's public beginning (`hfk_...`): safe to log and display.
    pub prefix: String,
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner: Option<String>,
    /// Its scopes.
    pub scopes: Vec<Scope>,
    /// The models it may use; `None` is every model.
    pub models: Option<Vec<String>>,
    /// Its limits.
    pub limits: KeyLimits,
    /// When it was made (Unix seconds).
    pub created_at: i64,
    /// When it expires, if ever.
    pub expires_at: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

impl ApiKey {
    /// Whether the key has `scope`.
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether the key may use `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|models| models.iter().any(|m| m == model))
    }

    /// Whether the key works at `now`: neither revoked nor expired.
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}

/// A key just made: the only time its secret exists outside the caller's hands.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// The stored key.
    pub key: ApiKey,
    /// The whole key, to give to its user.
    pub secret: String,
}

/// The row as stored.
#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    prefix: String,
    secret_hash: String,
    name: String,
    owner: Option<String>,
    scopes: String,
    models: Option<String>,
    rpm: Option<i64>,
    tpm: Option<i64>,
    budget_tokens: Option<i64>,
    budget_period: Option<String>,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl KeyRow {
    fn into_key(self) -> Result<ApiKey, PlatformError> {
        let scopes = self
            .scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(Scope::parse)
            .collect::<Result<_, _>>()?;
        let count = |v: Option<i64>| v.map(|n| n.max(0) as u64);
        Ok(ApiKey {
            id: self.id,
            prefix: self.prefix,
            name: self.name,
            owner: self.owner,
            scopes,
            models: self
                .models
                .map(|m| m.split(',').map(str::to_string).collect()),
            limits: KeyLimits {
                rpm: count(self.rpm),
                tpm: count(self.tpm),
                budget_tokens: count(self.budget_tokens),
                budget_period: self
                    .budget_period
                    .as_deref()
                    .map(BudgetPeriod::parse)
                    .transpose()?,
            },
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
        })
    }
}

const COLUMNS: &str = "id, prefix, secret_hash, name, owner, scopes, models, rpm, tpm, \
                       budget_tokens, budget_period, created_at, expires_at, revoked_at";

fn random_base62(n: usize) -> String {
    let mut rng = rand::rng(); // ChaCha, seeded from the OS: a CSPRNG
    (0..n)
        .map(|_| BASE62[rng.random_range(0..BASE62.len())] as char)
        .collect()
}

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The public prefix of a presented key, if it has the key shape.
fn prefix_of(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(KEY_TAG)?;
    let (prefix, secret) = rest.split_once('_')?;
    (prefix.len() == PREFIX_CHARS && secret.len() == SECRET_CHARS)
        .then(|| &presented[..KEY_TAG.len() + PREFIX_CHARS])
}

fn stored_count(v: Option<u64>) -> Option<i64> {
    v.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// Whether `id` could be a key id; anything else (a NUL byte PostgreSQL would refuse, a huge
/// string) matches no key without asking the database.
pub fn is_plausible_key_id(id: &str) -> bool {
    id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_new(new: &NewKey) -> Result<(), PlatformError> {
    if new.name.trim().is_empty() || new.name.len() > 200 {
        return Err(PlatformError::invalid(
            "a key needs a name of 1 to 200 characters",
        ));
    }
    if new.scopes.is_empty() {
        return Err(PlatformError::invalid("a key needs at least one scope"));
    }
    // Control characters (a NUL byte PostgreSQL refuses, escapes that would garble a listing)
    // have no place in a name.
    let mut texts = std::iter::once(&new.name)
        .chain(&new.owner)
        .chain(new.models.iter().flatten());
    if texts.any(|t| t.chars().any(char::is_control)) {
        return Err(PlatformError::invalid(
            "names, owners and models must not contain control characters",
        ));
    }
    if new.owner.as_ref().is_some_and(|o| o.len() > 200) {
        return Err(PlatformError::invalid(
            "an owner has at most 200 characters",
        ));
    }
    if let Some(models) = &new.models {
        if models.is_empty()
            || models.len() > 1000
            || models
                .iter()
                .any(|m| m.is_empty() || m.len() > 500 || m.contains(','))
        {
            return Err(PlatformError::invalid(
                "allowed models must be 1 to 1000 ids of 1 to 500 characters, without commas",
            ));
        }
    }
    if new.limits.budget_tokens.is_some() != new.limits.budget_period.is_some() {
        return Err(PlatformError::invalid(
            "a budget needs both a token count and a period",
        ));
    }
    // A key that could never be used is a mistake (a wrong unit, a clock), not a request.
    if let Some(at) = new.expires_at.filter(|&at| at <= unix_now()) {
        return Err(PlatformError::invalid(format!(
            "expires_at ({at}) is not in the future"
        )));
    }
    Ok(())
}

/// A new key's stored form and its secret, checked, with the hash of the secret to store.
fn prepare_key(new: NewKey) -> Result<(CreatedKey, String), PlatformError> {
    check_new(&new)?;
    let prefix = format!("{KEY_TAG}{}", random_base62(PREFIX_CHARS));
    let secret = format!("{prefix}_{}", random_base62(SECRET_CHARS));
    let mut scopes: Vec<Scope> = Vec::new();
    for scope in new.scopes {
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    let key = ApiKey {
        id: format!("key_{}", random_base62(16)),
        prefix,
        name: new.name,
        owner: new.owner,
        scopes,
        models: new.models,
        limits: new.limits,
        created_at: unix_now(),
        expires_at: new.expires_at,
        revoked_at: None,
    };
    let secret_hash = hash(&secret);
    Ok((CreatedKey { key, secret }, secret_hash))
}

/// Stores `key` (an [`ApiKey`]) with `secret_hash` through `executor` (a pool or a
/// transaction of either backend).
macro_rules! insert_key {
    ($executor:expr, $key:expr, $secret_hash:expr) => {{
        let key: &ApiKey = $key;
        let scopes = key
            .scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "INSERT INTO api_keys ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL)"
        );
        sqlx::query(&sql)
            .bind(&key.id)
            .bind(&key.prefix)
            .bind($secret_hash)
            .bind(&key.name)
            .bind(&key.owner)
            .bind(scopes)
            .bind(key.models.as_ref().map(|m| m.join(",")))
            .bind(stored_count(key.limits.rpm))
            .bind(stored_count(key.limits.tpm))
            .bind(stored_count(key.limits.budget_tokens))
            .bind(key.limits.budget_period.map(BudgetPeriod::as_str))
            .bind(key.created_at)
            .bind(key.expires_at)
            .execute($executor)
            .await
            .map(|_| ())?
    }};
}

impl Store {
    /// Makes a key; its secret is in the answer and nowhere else. Each limit the key leaves
    /// unset is taken from the [defaults](Store::key_defaults).
    pub async fn create_key(&self, mut new: NewKey) -> Result<CreatedKey, PlatformError> {
        new.limits = new.limits.or_defaults(&self.key_defaults().await?);
        self.create_key_exact(new).await
    }

    /// Makes a key with exactly `new.limits` (unset is unlimited), whatever the defaults.
    pub async fn create_key_exact(&self, new: NewKey) -> Result<CreatedKey, PlatformError> {
        let (created, secret_hash) = prepare_key(new)?;
        on_pool!(self, |pool| insert_key!(pool, &created.key, &secret_hash));
        Ok(created)
    }

    /// Makes an admin key if the store has no active one (a first start, or every admin key
    /// revoked), so that someone can administer the server; `None` when an admin key exists.
    /// Race-free: replicas starting at once on one database take turns on the
    /// `bootstrap_admin` row, so only the first makes a key.
    pub async fn bootstrap_admin_key(&self) -> Result<Option<CreatedKey>, PlatformError> {
        let now = unix_now();
        let (created, secret_hash) = prepare_key(NewKey {
            scopes: vec![Scope::Admin, Scope::Inference],
            ..NewKey::inference("bootstrap admin")
        })?;
        let made = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            // Writing the row first locks it (PostgreSQL) or the database (SQLite) until
            // commit, so the count below sees any key a concurrent bootstrap made.
            sqlx::query(
                "INSERT INTO platform_meta (name, value) VALUES ('bootstrap_admin', '') \
                 ON CONFLICT (name) DO UPDATE SET value = platform_meta.value",
            )
            .execute(&mut *tx)
            .await?;
            let admins: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $1) AND scopes LIKE '%admin%'",
            )
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let make = admins == 0;
            if make {
                insert_key!(&mut *tx, &created.key, &secret_hash);
                sqlx::query("UPDATE platform_meta SET value = $1 WHERE name = 'bootstrap_admin'")
                    .bind(&created.key.id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            make
        });
        Ok(made.then_some(created))
    }

    /// Every key, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>, PlatformError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id");
        let rows: Vec<KeyRow> = on_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await?);
        rows.into_iter().map(KeyRow::into_key).collect()
    }

    /// The key with this id.
    pub async fn get_key(&self, id: &str) -> Result<Option<ApiKey>, PlatformError> {
        if !is_plausible_key_id(id) {
            return Ok(None);
        }
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1");
        let row: Option<KeyRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await?);
        row.map(KeyRow::into_key).transpose()
    }

    /// Revokes a key at once; `false` if no key has this id. Revoking twice keeps the first
    /// time.
    pub async fn revoke_key(&self, id: &str) -> Result<bool, PlatformError> {
        if !is_plausible_key_id(id) {
            return Ok(false);
        }
        let sql = "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2";
        let done = on_pool!(self, |pool| sqlx::query(sql)
            .bind(unix_now())
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(done > 0)
    }

    /// The key a request presented, if it is one of ours and active. Unknown, malformed,
    /// revoked and expired keys are all `None`, and an unknown prefix costs the same hash
    /// and comparison as a known one.
    pub async fn verify_key(&self, presented: &str) -> Result<Option<ApiKey>, PlatformError> {
        let Some(prefix) = prefix_of(presented) else {
            return Ok(None);
        };
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE prefix = $1");
        let row: Option<KeyRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(prefix)
            .fetch_optional(pool)
            .await?);
        let presented_hash = hash(presented);
        // An unknown prefix is compared with a hash no key has, at the same cost.
        let stored_hash = row.as_ref().map_or(NO_KEY_HASH, |r| r.secret_hash.as_str());
        let matches = constant_time_eq(presented_hash.as_bytes(), stored_hash.as_bytes());
        let Some(row) = row.filter(|_| matches) else {
            return Ok(None);
        };
        let key = row.into_key()?;
        Ok(key.is_active(unix_now()).then_some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_a_fixed_shape_and_a_public_prefix() {
        let prefix = format!("{KEY_TAG}{}", random_base62(PREFIX_CHARS));
        let key = format!("{prefix}_{}", random_base62(SECRET_CHARS));
        assert_eq!(prefix_of(&key), Some(prefix.as_str()));
        assert_eq!(prefix_of("hfk_short_x"), None);
        assert_eq!(prefix_of("Bearer whatever"), None);
        assert_eq!(prefix_of(&key[..key.len() - 1]), None);
        assert_ne!(random_base62(32), random_base62(32));
        assert_eq!(hash("a").len(), 64);
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
    }
}

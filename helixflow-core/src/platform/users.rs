//! Users: people who log in with a username and a password (see [`super::tokens`] for the
//! access tokens a login gives). Passwords are kept only as argon2id hashes (PHC strings),
//! made and checked on the blocking thread pool so a login never stalls the async threads.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::Rng;

use super::store::on_pool;
use super::{unix_now, PlatformError, Scope, Store};

/// The longest username.
pub const MAX_USERNAME_CHARS: usize = 64;
/// The shortest password.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// What a new user should be.
#[derive(Clone, PartialEq, Eq)]
pub struct NewUser {
    /// 1 to 64 characters of `A-Z a-z 0-9 _ . @ -`.
    pub username: String,
    /// 8 to 1024 characters.
    pub password: String,
    /// What the user may do; at least one scope.
    pub scopes: Vec<Scope>,
}

impl NewUser {
    /// A user with the `inference` scope.
    pub fn inference(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
            scopes: vec![Scope::Inference],
        }
    }
}

// Written by hand so that a password never reaches a log through `{:?}`.
impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("password", &"***")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// A stored user, without the password hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Stable id (`usr_...`).
    pub id: String,
    /// The name the user logs in with.
    pub username: String,
    /// What the user may do.
    pub scopes: Vec<Scope>,
    /// When the user was made (Unix seconds).
    pub created_at: i64,
    /// When the user was disabled, if they were: logins and their tokens are refused.
    pub disabled_at: Option<i64>,
}

impl User {
    /// Whether the user has `scope`.
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether the user may log in.
    pub fn is_active(&self) -> bool {
        self.disabled_at.is_none()
    }
}

/// The row as stored.
#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: String,
    username: String,
    pub(crate) password_hash: String,
    scopes: String,
    created_at: i64,
    disabled_at: Option<i64>,
}

impl UserRow {
    pub(crate) fn into_user(self) -> Result<User, PlatformError> {
        Ok(User {
            id: self.id,
            username: self.username,
            scopes: parse_scopes(&self.scopes)?,
            created_at: self.created_at,
            disabled_at: self.disabled_at,
        })
    }
}

pub(crate) const USER_COLUMNS: &str =
    "id, username, password_hash, scopes, created_at, disabled_at";

/// `n` random letters and digits from a CSPRNG (ids, token ids).
pub(crate) fn random_id(n: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn parse_scopes(text: &str) -> Result<Vec<Scope>, PlatformError> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(Scope::parse)
        .collect()
}

/// Whether `username` is one a user could have: 1 to 64 of `A-Z a-z 0-9 _ . @ -`.
pub(crate) fn valid_username(username: &str) -> bool {
    (1..=MAX_USERNAME_CHARS).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b))
}

fn check_new(new: &NewUser) -> Result<(), PlatformError> {
    if !valid_username(&new.username) {
        return Err(PlatformError::invalid(format!(
            "a username has 1 to {MAX_USERNAME_CHARS} characters of A-Z, a-z, 0-9, `_`, `.`, \
             `@` and `-`"
        )));
    }
    let chars = new.password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        return Err(PlatformError::invalid(format!(
            "a password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        )));
    }
    if new.scopes.is_empty() {
        return Err(PlatformError::invalid("a user needs at least one scope"));
    }
    Ok(())
}

/// Hashes `password` with argon2id (default parameters) and a fresh random salt.
pub(crate) async fn hash_password(password: String) -> Result<String, PlatformError> {
    blocking(move || {
        let salt: [u8; 16] = rand::random(); // a CSPRNG seeded from the OS
        let salt = SaltString::encode_b64(&salt)
            .map_err(|e| PlatformError::Crypto(format!("making a salt failed: {e}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| PlatformError::Crypto(format!("hashing the password failed: {e}")))
    })
    .await?
}

/// Whether `password` matches the PHC string `hash`; with `None`, checks against a hash no
/// password matches, at the same cost, so that an unknown user takes as long as a known one.
pub(crate) async fn check_password(
    password: String,
    hash: Option<String>,
) -> Result<bool, PlatformError> {
    blocking(move || {
        let stored: &str = match &hash {
            Some(hash) => hash,
            None => unmatchable_hash(),
        };
        let Ok(parsed) = PasswordHash::new(stored) else {
            return false;
        };
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        matches && hash.is_some()
    })
    .await
}

/// An argon2id hash, with the default parameters, of a random password nobody knows.
fn unmatchable_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let password: [u8; 32] = rand::random();
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes fit");
        Argon2::default()
            .hash_password(&password, &salt)
            .expect("hashing random bytes works")
            .to_string()
    })
}

/// Runs a password hash off the async threads, a few at a time: each takes argon2's 19 MiB
/// and tens of milliseconds of a core, so a flood of logins (with usernames made up to dodge
/// the per-username limit) must queue here rather than take every blocking thread and
/// gigabytes of memory from the engine.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PlatformError> {
    static HASHING: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    let permits = std::thread::available_parallelism().map_or(2, |n| n.get());
    let _permit = HASHING
        .get_or_init(|| tokio::sync::Semaphore::new(permits))
        .acquire()
        .await
        .map_err(|e| PlatformError::Crypto(format!("the password check did not start: {e}")))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PlatformError::Crypto(format!("the password check did not finish: {e}")))
}

/// A unique-constraint violation, which the callers turn into a clear refusal.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl Store {
    /// Makes a user; the password is kept only as an argon2id hash. A taken username is
    /// [`PlatformError::Conflict`].
    pub async fn create_user(&self, new: NewUser) -> Result<User, PlatformError> {
        check_new(&new)?;
        let mut scopes: Vec<Scope> = Vec::new();
        for scope in new.scopes {
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        let user = User {
            id: format!("usr_{}", random_id(16)),
            username: new.username,
            scopes,
            created_at: unix_now(),
            disabled_at: None,
        };
        let password_hash = hash_password(new.password).await?;
        let scopes_text = user
            .scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!("INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, NULL)");
        let inserted = on_pool!(self, |pool| sqlx::query(&sql)
            .bind(&user.id)
            .bind(&user.username)
            .bind(&password_hash)
            .bind(&scopes_text)
            .bind(user.created_at)
            .execute(pool)
            .await
            .map(|_| ()));
        match inserted {
            Ok(()) => Ok(user),
            Err(e) if is_unique_violation(&e) => Err(PlatformError::Conflict(format!(
                "the username `{}` is taken",
                user.username
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Every user, oldest first (by name within a second).
    pub async fn list_users(&self) -> Result<Vec<User>, PlatformError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, username");
        let rows: Vec<UserRow> =
            on_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await?);
        rows.into_iter().map(UserRow::into_user).collect()
    }

    /// The user with this id.
    pub async fn get_user(&self, id: &str) -> Result<Option<User>, PlatformError> {
        self.user_row("id", id)
            .await?
            .map(UserRow::into_user)
            .transpose()
    }

    /// The user with this username.
    pub async fn get_user_by_name(&self, username: &str) -> Result<Option<User>, PlatformError> {
        self.user_row("username", username)
            .await?
            .map(UserRow::into_user)
            .transpose()
    }

    /// The row whose `column` (`id` or `username`, never caller input) is `value`.
    pub(crate) async fn user_row(
        &self,
        column: &'static str,
        value: &str,
    ) -> Result<Option<UserRow>, PlatformError> {
        // Ids and usernames share one alphabet: anything else (a NUL byte PostgreSQL would
        // reject, a 100 kB string) matches nobody without asking the database.
        if !valid_username(value) {
            return Ok(None);
        }
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = $1");
        Ok(on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(value)
            .fetch_optional(pool)
            .await?))
    }

    /// Disables a user: logins fail and their access tokens are refused (within
    /// [`super::CACHE_TTL`] on every replica). `false` if no user has this id; disabling
    /// twice keeps the first time.
    pub async fn disable_user(&self, id: &str) -> Result<bool, PlatformError> {
        if !valid_username(id) {
            return Ok(false);
        }
        let sql = "UPDATE users SET disabled_at = COALESCE(disabled_at, $1) WHERE id = $2";
        let done = on_pool!(self, |pool| sqlx::query(sql)
            .bind(unix_now())
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(done > 0)
    }

    /// The user `username` if `password` is theirs (disabled users included: the caller
    /// decides); `None` otherwise. An unknown username costs the same hash as a known one.
    pub async fn verify_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<User>, PlatformError> {
        let row = self.user_row("username", username).await?;
        let long = password.chars().count() > MAX_PASSWORD_CHARS;
        let hash = row
            .as_ref()
            .filter(|_| !long)
            .map(|r| r.password_hash.clone());
        // An over-long password is checked against the unmatchable hash: same cost, no match.
        let password = if long { String::new() } else { password.into() };
        if !check_password(password, hash).await? {
            return Ok(None);
        }
        row.map(UserRow::into_user).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_plain() {
        for good in [
            "alice",
            "a",
            "bob.smith@example.com",
            "x_y-z",
            &"a".repeat(64),
        ] {
            assert!(valid_username(good), "{good}");
        }
        for bad in [
            "",
            "a b",
            "x'; DROP TABLE users; --",
            "é",
            &"a".repeat(65),
            "a\0b",
        ] {
            assert!(!valid_username(bad), "{bad}");
        }
    }

    #[test]
    fn a_new_users_password_is_not_debug_printed() {
        let new = NewUser::inference("alice", "correct horse");
        assert!(!format!("{new:?}").contains("horse"));
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(check_password("correct horse".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!check_password("wrong horse".into(), Some(hash))
            .await
            .unwrap());
        assert!(!check_password("correct horse".into(), None).await.unwrap());
        assert!(!check_password("x".into(), Some("not a hash".into()))
            .await
            .unwrap());
    }
}

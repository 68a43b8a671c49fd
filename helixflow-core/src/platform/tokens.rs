//! Access tokens: what a user's login gives, presented as a bearer token until it expires.
//!
//! A token is a JWT signed with HS256 (HMAC-SHA-256) by a key derived from the server's
//! [`TokenSecret`] (a file beside the database, never in it) and a salt kept in the database,
//! so every replica given the same secret issues and checks the same tokens, and a copy of
//! the database alone mints none. Its claims are the user's id (`sub`), name,
//! scopes, a random token id (`jti`), and when it was issued and expires. A token is refused
//! once it expires, once its `jti` is revoked (logout, an admin), or once its user is
//! disabled; those last two are database lookups, cached per replica for at most
//! [`super::CACHE_TTL`].
//!
//! Failed logins are counted per username in a fixed window in the database, so the limit
//! holds across replicas; each attempt reserves its place in the count before the password
//! is checked, so concurrent guesses cannot slip past it.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::store::on_pool;
use super::users::{check_password, random_id, valid_username, UserRow, MAX_PASSWORD_CHARS};
use super::{unix_now, PlatformError, Scope, Store, User};

/// How long an access token lasts unless the policy says otherwise.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The longest lifetime a policy may give tokens.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// `{"alg":"HS256","typ":"JWT"}`: the only header this server issues or accepts.
const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Longer bearer tokens are refused before any decoding (ours are a few hundred bytes).
const MAX_TOKEN_BYTES: usize = 4096;

/// The `platform_secrets` row holding the signing key.
const SIGNING_KEY_NAME: &str = "access_token_hs256";

/// Clock difference between replicas tolerated in a token's issue time (seconds).
const CLOCK_SKEW: i64 = 60;

/// How tokens are issued and logins limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginPolicy {
    /// How long an access token lasts (1 s to [`MAX_TOKEN_LIFETIME`]).
    pub token_lifetime: Duration,
    /// Failed logins allowed per username in each window; the next ones are refused
    /// ([`LoginOutcome::RateLimited`]) until the window ends.
    pub max_failures: u32,
    /// The window failures are counted in.
    pub failure_window: Duration,
}

impl Default for LoginPolicy {
    /// 15-minute tokens; 10 failed logins per username a minute.
    fn default() -> Self {
        Self {
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            max_failures: 10,
            failure_window: Duration::from_secs(60),
        }
    }
}

impl LoginPolicy {
    /// Checks the bounds: a lifetime of 1 s to 24 h, at least one failure allowed, a window
    /// of 1 s to a day.
    pub fn validate(&self) -> Result<(), PlatformError> {
        let second = Duration::from_secs(1);
        if !(second..=MAX_TOKEN_LIFETIME).contains(&self.token_lifetime) {
            return Err(PlatformError::invalid(
                "an access token lifetime is between 1 second and 24 hours",
            ));
        }
        if self.max_failures == 0 {
            return Err(PlatformError::invalid("allow at least one failed login"));
        }
        if !(second..=Duration::from_secs(86_400)).contains(&self.failure_window) {
            return Err(PlatformError::invalid(
                "the failed-login window is between 1 second and a day",
            ));
        }
        Ok(())
    }
}

/// A signed access token just issued.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The token, to present as `Authorization: Bearer <token>`.
    pub token: String,
    /// Its id, for revocation.
    pub jti: String,
    /// The user it was issued to.
    pub user_id: String,
    /// When it expires (Unix seconds).
    pub expires_at: i64,
    /// Its lifetime in seconds.
    pub expires_in: u64,
}

// By hand, so a token never reaches a log through `{:?}`.
impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"***")
            .field("jti", &self.jti)
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What a login attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The password was right: here is a token.
    Issued(AccessToken),
    /// An unknown username or a wrong password (deliberately not told apart).
    BadCredentials,
    /// The password was right, but the user is disabled.
    Disabled,
    /// Too many failed logins for this username: try again after `retry_after`.
    RateLimited {
        /// How long until the window ends (whole seconds, at least one).
        retry_after: Duration,
    },
}

/// A logged-in user, as a verified access token shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSession {
    /// The user's id (`usr_...`).
    pub user_id: String,
    /// Their username.
    pub username: String,
    /// What the token allows: the scopes it was issued with that the user still has.
    pub scopes: Vec<Scope>,
    /// The token's id.
    pub jti: String,
    /// When the token expires (Unix seconds).
    pub expires_at: i64,
}

impl UserSession {
    /// Whether the session has `scope`.
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether the token is still within its lifetime at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        now < self.expires_at
    }
}

/// The identity of a token whose signature checked out, whatever its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenId {
    /// The token's id.
    pub jti: String,
    /// The user it was issued to.
    pub user_id: String,
    /// When it expires (Unix seconds).
    pub expires_at: i64,
}

/// The signed claims.
#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    sub: String,
    name: String,
    scopes: Vec<Scope>,
    jti: String,
    iat: i64,
    exp: i64,
}

/// The HS256 key every replica shares.
#[derive(Clone)]
pub(crate) struct SigningKey([u8; 32]);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }

    fn sign(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).expect("claims serialise");
        let message = format!("{HEADER}.{}", URL_SAFE_NO_PAD.encode(payload));
        let mut mac = self.mac();
        mac.update(message.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{message}.{signature}")
    }

    /// The claims of `token` if this key signed it (expired or not).
    fn open(&self, token: &str) -> Option<Claims> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let (message, signature) = token.rsplit_once('.')?;
        let (header, payload) = message.split_once('.')?;
        if header != HEADER {
            return None;
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = self.mac();
        mac.update(message.as_bytes());
        // `verify_slice` compares in constant time.
        mac.verify_slice(&signature).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }
}

/// Whether a bearer token has a JWT's shape (three base64url parts), and so is checked as an
/// access token rather than as an API key.
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Whether `jti` could be a token id (what admins may revoke by).
fn valid_jti(jti: &str) -> bool {
    (1..=64).contains(&jti.len())
        && jti
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// The server's half of the access-token signing key, kept outside the database: the key
/// that signs tokens is derived from this secret and a random salt stored in the database,
/// so that a copy of the database alone cannot mint tokens. Replicas sharing a database
/// must share the secret too (the same file); a replica with another secret is refused
/// ([`Store::signing_key`] checks a verifier stored beside the salt).
#[derive(Clone)]
pub struct TokenSecret([u8; 32]);

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret(***)")
    }
}

impl TokenSecret {
    /// A fresh secret from the operating system's CSPRNG.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// A secret of the given bytes (for replicas that get it from elsewhere, and tests).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The secret in `path` (64 hexadecimal digits), made there (mode 0600) if the file does
    /// not exist. Servers starting together agree on one: the file appears whole, once.
    pub fn load_or_create(path: &std::path::Path) -> Result<Self, PlatformError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_hex(text.trim()).ok_or_else(|| {
                PlatformError::config(format!(
                    "{} is not a token secret (64 hexadecimal digits)",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = Self::random();
                // Written aside, then linked into place: a reader never sees half a secret,
                // and a link that finds the file there already leaves the winner's.
                let aside = path.with_extension(format!("new-{:016x}", rand::random::<u64>()));
                let text = format!("{}\n", secret.hex());
                super::data_dir::write_private_file(&aside, text.as_bytes())?;
                let linked = std::fs::hard_link(&aside, path);
                let _ = std::fs::remove_file(&aside);
                match linked {
                    Ok(()) => Ok(secret),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(path)
                    }
                    Err(e) => Err(PlatformError::config(format!(
                        "writing the token secret {}: {e}",
                        path.display()
                    ))),
                }
            }
            Err(e) => Err(PlatformError::config(format!(
                "reading the token secret {}: {e}",
                path.display()
            ))),
        }
    }

    fn from_hex(text: &str) -> Option<Self> {
        let bytes = decode_hex(text)?;
        Some(Self(bytes))
    }

    fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The `platform_secrets` row holding a MAC of a fixed text under the derived key: replicas
/// whose secrets differ would sign tokens the others refuse, so they are refused at start.
const VERIFIER_NAME: &str = "access_token_hs256_verifier";

impl Store {
    /// Inserts `value` under `name` in `platform_secrets` unless a row exists, then reads
    /// whichever value won (replicas starting together agree on one).
    async fn shared_secret_row(&self, name: &str, value: &str) -> Result<String, PlatformError> {
        let insert = "INSERT INTO platform_secrets (name, value, created_at) VALUES ($1, $2, $3) \
                      ON CONFLICT (name) DO NOTHING";
        let select = "SELECT value FROM platform_secrets WHERE name = $1";
        Ok(on_pool!(self, |pool| {
            sqlx::query(insert)
                .bind(name)
                .bind(value)
                .bind(unix_now())
                .execute(pool)
                .await?;
            sqlx::query_scalar(select)
                .bind(name)
                .fetch_one(pool)
                .await?
        }))
    }

    /// The signing key: HMAC-SHA-256 of the database's salt (made by the first replica that
    /// needs it) under this server's [`TokenSecret`]. Refused when the store has no secret,
    /// or one other than the secret the database's tokens are signed with.
    pub(crate) async fn signing_key(&self) -> Result<SigningKey, PlatformError> {
        let secret = self.token_secret().ok_or_else(|| {
            PlatformError::config(
                "no token secret: access tokens need the server's secret (Store::with_token_secret)",
            )
        })?;
        let fresh: String = TokenSecret::random().hex();
        let salt = self.shared_secret_row(SIGNING_KEY_NAME, &fresh).await?;
        if decode_hex(&salt).is_none() {
            return Err(PlatformError::config(
                "the stored access-token salt is damaged",
            ));
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes any key");
        mac.update(b"helixflow access-token key\0");
        mac.update(salt.as_bytes());
        let key = SigningKey(mac.finalize().into_bytes().into());
        let mut check = key.mac();
        check.update(b"helixflow token secret verifier");
        let verifier: String = check
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let stored = self.shared_secret_row(VERIFIER_NAME, &verifier).await?;
        if stored != verifier {
            return Err(PlatformError::config(
                "this server's token secret is not the one this database's access tokens are \
                 signed with: every replica sharing a database needs the same token secret file \
                 (--token-secret-file)",
            ));
        }
        Ok(key)
    }

    /// Checks, at start, that access tokens can be signed and checked with this server's
    /// secret (see [`Store::signing_key`]).
    pub async fn check_token_secret(&self) -> Result<(), PlatformError> {
        self.signing_key().await.map(|_| ())
    }

    /// Logs `username` in with the default [`LoginPolicy`].
    pub async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<LoginOutcome, PlatformError> {
        self.login_with(username, password, &LoginPolicy::default())
            .await
    }

    /// Logs `username` in: a token if the password is right and the user active. Unknown
    /// users and wrong passwords get the same answer after the same work (an argon2 check),
    /// and failures are limited per username by `policy`, across replicas.
    pub async fn login_with(
        &self,
        username: &str,
        password: &str,
        policy: &LoginPolicy,
    ) -> Result<LoginOutcome, PlatformError> {
        policy.validate()?;
        let plausible = valid_username(username) && password.chars().count() <= MAX_PASSWORD_CHARS;
        if !plausible {
            // No such user can exist: the same cost as a wrong password, nothing counted.
            check_password(String::new(), None).await?;
            return Ok(LoginOutcome::BadCredentials);
        }
        if let Some(retry_after) = self.reserve_attempt(username, policy).await? {
            return Ok(LoginOutcome::RateLimited { retry_after });
        }
        let row = self.user_row("username", username).await?;
        let hash = row.as_ref().map(|r| r.password_hash.clone());
        if !check_password(password.to_string(), hash).await? {
            return Ok(LoginOutcome::BadCredentials);
        }
        let user = row.map(UserRow::into_user).transpose()?;
        let Some(user) = user.filter(User::is_active) else {
            return Ok(LoginOutcome::Disabled);
        };
        // A success is not a failure: give back the place this attempt took.
        self.release_attempt(username).await?;
        Ok(LoginOutcome::Issued(
            self.issue_token(&user, policy.token_lifetime).await?,
        ))
    }

    /// Counts an attempt for `username` before its password is checked; `Some(wait)` if
    /// the window's failures are used up.
    async fn reserve_attempt(
        &self,
        username: &str,
        policy: &LoginPolicy,
    ) -> Result<Option<Duration>, PlatformError> {
        let now = unix_now();
        let window = seconds(policy.failure_window);
        // One atomic statement: a window that has ended starts over at this attempt.
        let upsert = "INSERT INTO login_attempts (username, window_start, failures) \
                      VALUES ($1, $2, 1) \
                      ON CONFLICT (username) DO UPDATE SET \
                        failures = CASE WHEN login_attempts.window_start <= $3 THEN 1 \
                                        ELSE login_attempts.failures + 1 END, \
                        window_start = CASE WHEN login_attempts.window_start <= $3 THEN $2 \
                                            ELSE login_attempts.window_start END \
                      RETURNING window_start, failures";
        let cleanup = "DELETE FROM login_attempts WHERE window_start <= $1";
        let (window_start, failures): (i64, i64) = on_pool!(self, |pool| {
            // Old windows of usernames nobody tries any more are dropped as we go.
            sqlx::query(cleanup)
                .bind(now - window - 86_400)
                .execute(pool)
                .await?;
            sqlx::query_as(upsert)
                .bind(username)
                .bind(now)
                .bind(now - window)
                .fetch_one(pool)
                .await?
        });
        if failures <= i64::from(policy.max_failures) {
            return Ok(None);
        }
        let wait = (window_start + window - now).max(1);
        Ok(Some(Duration::from_secs(wait.unsigned_abs())))
    }

    async fn release_attempt(&self, username: &str) -> Result<(), PlatformError> {
        let sql = "UPDATE login_attempts SET failures = failures - 1 \
                   WHERE username = $1 AND failures > 0";
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(username)
            .execute(pool)
            .await
            .map(|_| ())?);
        Ok(())
    }

    /// Issues a token for `user` lasting `lifetime` (1 s to [`MAX_TOKEN_LIFETIME`]), without
    /// a password: for a caller that has already checked who this is.
    pub async fn issue_token(
        &self,
        user: &User,
        lifetime: Duration,
    ) -> Result<AccessToken, PlatformError> {
        LoginPolicy {
            token_lifetime: lifetime,
            ..LoginPolicy::default()
        }
        .validate()?;
        let now = unix_now();
        let claims = Claims {
            sub: user.id.clone(),
            name: user.username.clone(),
            scopes: user.scopes.clone(),
            jti: random_id(22),
            iat: now,
            exp: now.saturating_add(seconds(lifetime)),
        };
        let token = self.signing_key().await?.sign(&claims);
        Ok(AccessToken {
            token,
            jti: claims.jti,
            user_id: claims.sub,
            expires_at: claims.exp,
            expires_in: lifetime.as_secs(),
        })
    }

    /// The session a presented access token stands for, if it is ours, unexpired,
    /// unrevoked and its user active; `None` otherwise.
    pub async fn verify_token(&self, token: &str) -> Result<Option<UserSession>, PlatformError> {
        let key = self.signing_key().await?;
        self.verify_token_with(&key, token).await
    }

    pub(crate) async fn verify_token_with(
        &self,
        key: &SigningKey,
        token: &str,
    ) -> Result<Option<UserSession>, PlatformError> {
        let now = unix_now();
        let Some(claims) = key.open(token) else {
            return Ok(None);
        };
        if now >= claims.exp || claims.iat > now + CLOCK_SKEW {
            return Ok(None);
        }
        let sql = "SELECT u.username, u.scopes, u.disabled_at, \
                   (SELECT COUNT(*) FROM revoked_tokens r WHERE r.jti = $2) AS revoked \
                   FROM users u WHERE u.id = $1";
        let row: Option<(String, String, Option<i64>, i64)> = on_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(&claims.sub)
                .bind(&claims.jti)
                .fetch_optional(pool)
                .await?
        });
        let Some((username, scopes, disabled_at, revoked)) = row else {
            return Ok(None);
        };
        if disabled_at.is_some() || revoked > 0 {
            return Ok(None);
        }
        let current: Vec<Scope> = scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(Scope::parse)
            .collect::<Result<_, _>>()?;
        Ok(Some(UserSession {
            user_id: claims.sub,
            username,
            scopes: claims
                .scopes
                .into_iter()
                .filter(|s| current.contains(s))
                .collect(),
            jti: claims.jti,
            expires_at: claims.exp,
        }))
    }

    /// Who a token was issued to, if this store's key signed it, whether or not it has
    /// expired or been revoked (to revoke a token presented whole).
    pub async fn token_id(&self, token: &str) -> Result<Option<TokenId>, PlatformError> {
        Ok(self.signing_key().await?.open(token).map(|c| TokenId {
            jti: c.jti,
            user_id: c.sub,
            expires_at: c.exp,
        }))
    }

    /// Refuses the token `jti` from now on, on every replica (within
    /// [`super::CACHE_TTL`]). Without `expires_at` the record is kept as long as the longest
    /// token could last. Revoking twice keeps the first time.
    pub async fn revoke_token(
        &self,
        jti: &str,
        user_id: Option<&str>,
        expires_at: Option<i64>,
    ) -> Result<(), PlatformError> {
        if !valid_jti(jti) {
            return Err(PlatformError::invalid(
                "a token id has 1 to 64 characters of A-Z, a-z, 0-9, `-` and `_`",
            ));
        }
        let now = unix_now();
        let keep_until = expires_at.unwrap_or(now + seconds(MAX_TOKEN_LIFETIME));
        let insert = "INSERT INTO revoked_tokens (jti, user_id, expires_at, revoked_at) \
                      VALUES ($1, $2, $3, $4) ON CONFLICT (jti) DO NOTHING";
        // Records of tokens that have expired anyway are no longer needed.
        let cleanup = "DELETE FROM revoked_tokens WHERE expires_at < $1";
        on_pool!(self, |pool| {
            sqlx::query(insert)
                .bind(jti)
                .bind(user_id)
                .bind(keep_until)
                .bind(now)
                .execute(pool)
                .await?;
            sqlx::query(cleanup)
                .bind(now - CLOCK_SKEW)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "usr_1".into(),
            name: "alice".into(),
            scopes: vec![Scope::Inference],
            jti: "abc".into(),
            iat: 0,
            exp,
        }
    }

    #[test]
    fn tokens_open_only_with_their_key_and_intact() {
        let key = SigningKey([7; 32]);
        let token = key.sign(&claims(10));
        assert!(looks_like_jwt(&token));
        assert!(token.starts_with(HEADER));
        let opened = key.open(&token).unwrap();
        assert_eq!((opened.sub.as_str(), opened.exp), ("usr_1", 10));
        assert!(SigningKey([8; 32]).open(&token).is_none());
        // Any change to the header, the claims or the signature breaks it.
        let (message, signature) = token.rsplit_once('.').unwrap();
        let forged_claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(99)).unwrap());
        let forged = format!("{HEADER}.{forged_claims}.{signature}");
        assert!(key.open(&forged).is_none());
        let none_alg = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let (_, rest) = message.split_once('.').unwrap();
        assert!(key
            .open(&format!("{none_alg}.{rest}.{signature}"))
            .is_none());
        assert!(key.open(&format!("{message}.")).is_none());
        assert!(key.open(&format!("{message}.{signature}A")).is_none());
        assert!(!looks_like_jwt("hfk_abc_def"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a..c"));
        assert!(!looks_like_jwt("a.b.c'--"));
    }

    #[test]
    fn token_secrets_are_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token-secret");
        let made = TokenSecret::load_or_create(&path).unwrap();
        let read = TokenSecret::load_or_create(&path).unwrap();
        assert_eq!(made.0, read.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::write(&path, "not hex").unwrap();
        assert!(TokenSecret::load_or_create(&path).is_err());
    }

    #[test]
    fn policies_are_bounded() {
        assert!(LoginPolicy::default().validate().is_ok());
        let bad = [
            LoginPolicy {
                token_lifetime: Duration::ZERO,
                ..LoginPolicy::default()
            },
            LoginPolicy {
                token_lifetime: MAX_TOKEN_LIFETIME + Duration::from_secs(1),
                ..LoginPolicy::default()
            },
            LoginPolicy {
                max_failures: 0,
                ..LoginPolicy::default()
            },
        ];
        for policy in bad {
            assert!(policy.validate().is_err(), "{policy:?}");
        }
        assert!(valid_jti("Ab_-9") && !valid_jti("") && !valid_jti("x'; --"));
    }
}

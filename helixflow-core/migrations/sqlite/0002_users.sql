-- Users who log in with a password (an argon2id PHC string; never the password itself).
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    disabled_at   BIGINT
);

-- Access tokens refused before they expire (logout, admin revocation). A row is only needed
-- until `expires_at`, after which the token is refused anyway; `user_id` is NULL when an
-- admin revoked a bare token id.
CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    user_id    TEXT,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);

-- Secrets every replica shares, such as the key that signs access tokens.
CREATE TABLE platform_secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Failed logins per username in a fixed window, shared by every replica.
CREATE TABLE login_attempts (
    username     TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    failures     BIGINT NOT NULL
);
CREATE INDEX login_attempts_window_start ON login_attempts (window_start);

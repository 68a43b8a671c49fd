-- API keys: only a hash of each key is kept; `prefix` (not secret) finds the row.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    prefix        TEXT NOT NULL UNIQUE,
    secret_hash   TEXT NOT NULL,
    name          TEXT NOT NULL,
    owner         TEXT,
    scopes        TEXT NOT NULL,
    models        TEXT,
    rpm           BIGINT,
    tpm           BIGINT,
    budget_tokens BIGINT,
    budget_period TEXT,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT
);

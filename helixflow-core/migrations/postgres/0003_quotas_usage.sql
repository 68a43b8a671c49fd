-- Quota counters: how much of one limit (`rpm`, `tpm` or `budget`) a key used in one window
-- (its start, Unix seconds). Admissions add to `used` only while it stays within the limit,
-- in one statement, so replicas sharing the database never admit past it.
CREATE TABLE quota_counters (
    key_id       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    used         BIGINT NOT NULL,
    PRIMARY KEY (key_id, kind, window_start)
);

-- One row per admitted request, written in batches off the request path.
CREATE TABLE usage_records (
    id                BIGSERIAL PRIMARY KEY,
    request_id        TEXT,
    key_id            TEXT,
    user_id           TEXT,
    model             TEXT NOT NULL,
    endpoint          TEXT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    status            BIGINT NOT NULL,
    cancelled         BOOLEAN NOT NULL,
    ttft_ms           BIGINT,
    latency_ms        BIGINT NOT NULL,
    created_at        BIGINT NOT NULL
);
CREATE INDEX usage_records_created_at ON usage_records (created_at);
CREATE INDEX usage_records_key ON usage_records (key_id, created_at);
CREATE INDEX usage_records_user ON usage_records (user_id, created_at);

-- The limits a new key gets for each limit it leaves unset: one row (id 1) or none.
CREATE TABLE key_defaults (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    rpm           BIGINT,
    tpm           BIGINT,
    budget_tokens BIGINT,
    budget_period TEXT
);

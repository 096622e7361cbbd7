-- Write-back commands: accepted once on disk, executed toward the ERP under a lease, finished together with
-- their outcome event. One row per (source, idempotency key); the body hash tells a retry of the same
-- request from a different request reusing the key.
CREATE TABLE commands (
    id               TEXT PRIMARY KEY,
    source           TEXT NOT NULL,
    command          TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    body_hash        TEXT NOT NULL,
    body             BLOB NOT NULL,
    order_key        TEXT NOT NULL,
    reference        TEXT,
    status           TEXT NOT NULL CHECK (status IN ('accepted', 'running', 'succeeded', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    lease_owner      TEXT,
    lease_until      TEXT,
    result           TEXT,
    error            TEXT,
    window_start_at  TEXT NOT NULL,      -- when the retry window (max_age) began: creation or an operator retry
    created_at       TEXT NOT NULL,
    finished_at      TEXT,
    UNIQUE (source, idempotency_key)
);

-- Claims walk the open commands of one source in order; per-key order looks for an older open one.
CREATE INDEX commands_open ON commands (source, status) WHERE status IN ('accepted', 'running');
CREATE INDEX commands_key ON commands (source, order_key) WHERE status IN ('accepted', 'running');
CREATE INDEX commands_created ON commands (created_at);

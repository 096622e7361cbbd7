-- Events, deliveries, attempts, quarantine, subscriber and key state, poll checkpoints.
-- Timestamps are ISO 8601 UTC text of fixed width ('2026-11-22T15:04:05.123456Z'): they sort as instants.

CREATE TABLE events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT    NOT NULL UNIQUE,
    channel        TEXT    NOT NULL,
    source         TEXT    NOT NULL,
    tenant_id      TEXT,
    entity_key     TEXT,
    version        TEXT,
    version_order  TEXT    NOT NULL DEFAULT '',
    occurred_at    TEXT    NOT NULL,
    received_at    TEXT    NOT NULL,
    payload        BLOB    NOT NULL,
    original       BLOB,
    original_type  TEXT
);
CREATE INDEX events_received_at ON events (received_at);
CREATE INDEX events_channel ON events (channel, received_at);
CREATE INDEX events_source ON events (source, received_at);
CREATE INDEX events_entity_key ON events (entity_key);

CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT    NOT NULL REFERENCES events (event_id) ON DELETE CASCADE,
    subscriber       TEXT    NOT NULL,
    entity_key       TEXT,
    version_order    TEXT    NOT NULL DEFAULT '',
    state            TEXT    NOT NULL,  -- pending | delivered | dead | stale | superseded
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT    NOT NULL,
    next_attempt_at  TEXT    NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    replay           INTEGER NOT NULL DEFAULT 0,
    last_status      INTEGER,
    last_error       TEXT,
    finished_at      TEXT
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_key ON deliveries (subscriber, entity_key, version_order) WHERE state = 'pending';
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_subscriber_state ON deliveries (subscriber, state);

CREATE TABLE attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id      INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt          INTEGER NOT NULL,
    started_at       TEXT    NOT NULL,
    duration_ms      REAL    NOT NULL,
    status           INTEGER,
    error            TEXT,
    response_excerpt BLOB
);
CREATE INDEX attempts_delivery ON attempts (delivery_id);

CREATE TABLE quarantine (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at   TEXT NOT NULL,
    source        TEXT NOT NULL,
    channel       TEXT,
    reason        TEXT NOT NULL,
    details       TEXT NOT NULL DEFAULT '[]',
    content_type  TEXT,
    body          BLOB NOT NULL
);
CREATE INDEX quarantine_received_at ON quarantine (received_at);

CREATE TABLE subscriber_state (
    subscriber       TEXT PRIMARY KEY,
    disabled         INTEGER NOT NULL DEFAULT 0,
    disabled_reason  TEXT,
    disabled_at      TEXT,
    last_success_at  TEXT
);

-- Per-key ordering: the newest version delivered to a subscriber for one entity key.
CREATE TABLE key_state (
    subscriber              TEXT NOT NULL,
    entity_key              TEXT NOT NULL,
    delivered_version_order TEXT NOT NULL,
    PRIMARY KEY (subscriber, entity_key)
);

CREATE TABLE checkpoints (
    source      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    high_water  TEXT,
    last_key    TEXT,
    state       TEXT NOT NULL DEFAULT '{}',
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (source, resource)
);

CREATE TABLE record_hashes (
    source      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    record_key  TEXT NOT NULL,
    hash        TEXT NOT NULL,
    seen_at     TEXT NOT NULL,
    PRIMARY KEY (source, resource, record_key)
);

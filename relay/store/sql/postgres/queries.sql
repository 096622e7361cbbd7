-- Named queries of the PostgreSQL backend (relay/store/postgres.py). Parameters are positional ($1 …, asyncpg);
-- batches are bound as arrays and expanded with unnest(): one statement per table per group commit.

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at text NOT NULL
);

-- name: migration_lock
-- Held until the migrating transaction ends: instances starting at once apply each migration once, in turn.
SELECT pg_advisory_xact_lock(7235083390127718191);

-- name: applied_migrations
SELECT version FROM schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3);

-- name: insert_events
-- The new events of a batch; ids another instance stored meanwhile are left alone and not returned.
INSERT INTO events (event_id, channel, source, tenant_id, entity_key, version, version_order,
                    occurred_at, received_at, payload, original, original_type)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::text[], $10::bytea[], $11::bytea[], $12::text[])
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id;

-- name: supersede_older
-- collapse: a newer version replaces pending, not in-flight, older deliveries of the same key.
UPDATE deliveries d SET state = 'superseded', finished_at = r.now, last_error = 'superseded by ' || r.event_id
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
     AS r(event_id, subscriber, entity_key, version_order, now)
WHERE d.subscriber = r.subscriber AND d.entity_key = r.entity_key AND d.state = 'pending'
  AND d.version_order < r.version_order COLLATE "C" AND NOT d.replay
  AND (d.lease_expires_at IS NULL OR d.lease_expires_at < r.now COLLATE "C");

-- name: insert_deliveries_checked
-- Deliveries at ingest: `stale` when the subscriber already got a newer version of the key.
INSERT INTO deliveries (event_id, subscriber, entity_key, version_order, state, created_at, next_attempt_at, replay)
SELECT r.event_id, r.subscriber, r.entity_key, r.version_order,
       CASE WHEN r.check_stale AND r.entity_key IS NOT NULL AND EXISTS (
                SELECT 1 FROM key_state k
                WHERE k.subscriber = r.subscriber AND k.entity_key = r.entity_key
                  AND k.delivered_version_order > r.version_order COLLATE "C")
            THEN 'stale' ELSE 'pending' END,
       r.created_at, r.created_at, false
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::boolean[], $6::text[]) WITH ORDINALITY
     AS r(event_id, subscriber, entity_key, version_order, check_stale, created_at, n)
ORDER BY r.n;

-- name: insert_quarantine
INSERT INTO quarantine (received_at, source, channel, reason, details, content_type, size, body)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING id;

-- name: quarantine_bytes
SELECT bytes FROM quarantine_usage WHERE id = 1;

-- name: quarantine_oldest
-- Budget: the oldest entries after $1, never $2 (the one just stored) or newer.
SELECT id, size FROM quarantine WHERE id > $1 AND id < $2 ORDER BY id LIMIT $3;

-- name: drop_quarantine_through
DELETE FROM quarantine WHERE id <= $1;

-- name: prune_quarantine
DELETE FROM quarantine WHERE id IN (
    SELECT id FROM quarantine WHERE received_at < $1 ORDER BY received_at LIMIT $2);

-- name: delete_quarantine
DELETE FROM quarantine WHERE id = $1;

-- name: list_quarantine
SELECT id, received_at, source, channel, reason, details, content_type, length(body)
FROM quarantine
WHERE ($1::text IS NULL OR source = $1)
ORDER BY id DESC
LIMIT $2;

-- name: get_quarantine
SELECT id, received_at, source, channel, reason, details, content_type, body
FROM quarantine WHERE id = $1;

-- name: touch_store_probe
INSERT INTO store_probe (id, checked_at) VALUES (1, $1)
ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at;

-- name: list_events
-- Oldest first after a cursor. Event inserts commit one at a time across instances (`event_insert_lock`), so
-- `seq` grows in commit order and a follower that remembers the last one misses nothing.
SELECT seq, event_id, channel, source, tenant_id, entity_key, version, occurred_at, received_at,
       payload, original, original_type
FROM events
WHERE ($1::text IS NULL OR channel = $1)
  AND ($2::text IS NULL OR source = $2)
  AND ($3::text IS NULL OR entity_key = $3)
  AND ($4::text IS NULL OR event_id = $4)
  AND ($5::text IS NULL OR received_at >= $5)
  AND ($6::text IS NULL OR received_at < $6)
  AND seq > $7
ORDER BY seq
LIMIT $8;

-- name: list_events_newest
-- The console's and lists' order: the latest arrivals first (the same filters and lower bound).
SELECT seq, event_id, channel, source, tenant_id, entity_key, version, occurred_at, received_at,
       payload, original, original_type
FROM events
WHERE ($1::text IS NULL OR channel = $1)
  AND ($2::text IS NULL OR source = $2)
  AND ($3::text IS NULL OR entity_key = $3)
  AND ($4::text IS NULL OR event_id = $4)
  AND ($5::text IS NULL OR received_at >= $5)
  AND ($6::text IS NULL OR received_at < $6)
  AND seq > $7
ORDER BY seq DESC
LIMIT $8;

-- name: last_event_seq
SELECT coalesce(max(seq), 0) FROM events;

-- name: event_insert_lock
-- Taken by every transaction that inserts events, held until it commits: `seq` values become visible in the
-- order they were drawn, which is what a cursor over events (`relay events tail`) relies on.
SELECT pg_advisory_xact_lock(7235083390127718192);

-- name: get_event
SELECT event_id, channel, source, tenant_id, entity_key, version, occurred_at, received_at,
       payload, original, original_type
FROM events WHERE event_id = $1;

-- name: count_events
SELECT count(*) FROM events;

-- name: claim_due
-- Leases up to $5 due deliveries of one subscriber; rows another instance is claiming right now are skipped,
-- never waited for. Returns what the attempt needs, with the claim's fencing token.
WITH claimed AS (
    UPDATE deliveries SET lease_owner = $1, lease_expires_at = $2, lease_token = nextval('lease_tokens')
    WHERE id IN (
        SELECT d.id FROM deliveries d
        WHERE d.state = 'pending' AND d.subscriber = $3 AND d.next_attempt_at <= $4
          AND (d.lease_expires_at IS NULL OR d.lease_expires_at < $4)
        ORDER BY d.next_attempt_at, d.id
        LIMIT $5
        FOR UPDATE SKIP LOCKED)
    RETURNING id, subscriber, attempts, created_at, replay, entity_key, version_order, event_id, lease_token)
SELECT c.id, c.subscriber, c.attempts, c.created_at, c.replay, c.entity_key, c.version_order,
       e.event_id, e.channel, e.source, e.received_at, e.payload, e.original, e.original_type, c.lease_token
FROM claimed c JOIN events e ON e.event_id = c.event_id
ORDER BY c.id;

-- name: claim_due_per_key
-- Per-key ordering across instances: only the head of each key (lowest version, then oldest), and only when no
-- delivery of that key is leased by anyone. A head another instance is locking is skipped, and the versions
-- behind it stay blocked because the head is still pending in this statement's snapshot.
WITH claimed AS (
    UPDATE deliveries SET lease_owner = $1, lease_expires_at = $2, lease_token = nextval('lease_tokens')
    WHERE id IN (
        SELECT d.id FROM deliveries d
        WHERE d.state = 'pending' AND d.subscriber = $3 AND d.next_attempt_at <= $4
          AND (d.lease_expires_at IS NULL OR d.lease_expires_at < $4)
          AND (d.entity_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM deliveries o
                WHERE o.subscriber = d.subscriber AND o.entity_key = d.entity_key AND o.state = 'pending'
                  AND o.id <> d.id
                  AND (o.version_order < d.version_order
                       OR (o.version_order = d.version_order AND o.id < d.id)
                       OR o.lease_expires_at >= $4)))
        ORDER BY d.next_attempt_at, d.id
        LIMIT $5
        FOR UPDATE OF d SKIP LOCKED)
    RETURNING id, subscriber, attempts, created_at, replay, entity_key, version_order, event_id, lease_token)
SELECT c.id, c.subscriber, c.attempts, c.created_at, c.replay, c.entity_key, c.version_order,
       e.event_id, e.channel, e.source, e.received_at, e.payload, e.original, e.original_type, c.lease_token
FROM claimed c JOIN events e ON e.event_id = c.event_id
ORDER BY c.id;

-- name: insert_attempts
INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status, error, response_excerpt)
SELECT * FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::float8[], $5::integer[], $6::text[], $7::bytea[]);

-- name: finish_deliveries
-- Applies the retry policy's decisions; only the holder of the current claim may (owner and fencing token):
-- after a lease expired and another claim took the delivery, the late completion changes nothing.
UPDATE deliveries d
SET state = r.state, attempts = r.attempt, next_attempt_at = coalesce(r.next_attempt_at, d.next_attempt_at),
    lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL, last_status = r.status, last_error = r.error,
    finished_at = r.finished_at
FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::integer[], $6::text[], $7::integer[],
            $8::text[], $9::text[])
     AS r(delivery_id, owner, token, state, attempt, next_attempt_at, status, error, finished_at)
WHERE d.id = r.delivery_id AND d.lease_owner = r.owner AND (r.token IS NULL OR d.lease_token = r.token);

-- name: record_keys_delivered
INSERT INTO key_state (subscriber, entity_key, delivered_version_order)
SELECT subscriber, entity_key, max(version_order COLLATE "C")
FROM unnest($1::text[], $2::text[], $3::text[]) AS r(subscriber, entity_key, version_order)
GROUP BY subscriber, entity_key
ON CONFLICT (subscriber, entity_key) DO UPDATE
SET delivered_version_order = greatest(key_state.delivered_version_order, excluded.delivered_version_order);

-- name: mark_older_stale
UPDATE deliveries d SET state = 'stale', finished_at = r.now, last_error = 'stale: a newer version was delivered'
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS r(subscriber, entity_key, version_order, now)
WHERE d.subscriber = r.subscriber AND d.entity_key = r.entity_key AND d.state = 'pending'
  AND d.version_order < r.version_order COLLATE "C" AND NOT d.replay
  AND (d.lease_expires_at IS NULL OR d.lease_expires_at < r.now COLLATE "C");

-- name: touch_subscriber_success
INSERT INTO subscriber_state (subscriber, last_success_at)
SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT (subscriber) DO UPDATE
SET last_success_at = greatest(coalesce(subscriber_state.last_success_at, ''), excluded.last_success_at);

-- name: renew_leases
-- Only the holder of the very claim (its fencing token) renews, and only while the delivery is still pending.
UPDATE deliveries d SET lease_expires_at = $2
FROM unnest($3::bigint[], $4::bigint[]) AS r(id, token)
WHERE d.id = r.id AND d.lease_owner = $1 AND d.state = 'pending' AND (r.token IS NULL OR d.lease_token = r.token)
RETURNING d.id;

-- name: release_leases
UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL
WHERE lease_owner = $1 AND state = 'pending';

-- name: set_subscriber_disabled
INSERT INTO subscriber_state (subscriber, disabled, disabled_reason, disabled_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (subscriber) DO UPDATE
SET disabled = excluded.disabled, disabled_reason = excluded.disabled_reason, disabled_at = excluded.disabled_at;

-- name: set_circuit_state
INSERT INTO subscriber_state (subscriber, circuit_state, circuit_changed_at) VALUES ($1, $2, $3)
ON CONFLICT (subscriber) DO UPDATE
SET circuit_state = excluded.circuit_state, circuit_changed_at = excluded.circuit_changed_at;

-- name: subscriber_states
SELECT subscriber, disabled, disabled_reason, disabled_at, last_success_at, circuit_state, circuit_changed_at
FROM subscriber_state;

-- name: delivery_counts
SELECT subscriber, state, count(*) FROM deliveries
WHERE state IN ('pending', 'dead') GROUP BY subscriber, state;

-- name: next_due_at
SELECT min(next_attempt_at) FROM deliveries WHERE state = 'pending';

-- name: list_deliveries
SELECT d.id, d.event_id, d.subscriber, d.state, d.attempts, d.created_at, d.next_attempt_at,
       d.replay, d.last_status, d.last_error, d.finished_at, e.channel, d.entity_key
FROM deliveries d JOIN events e ON e.event_id = d.event_id
WHERE ($1::text IS NULL OR d.event_id = $1)
  AND ($2::text IS NULL OR d.subscriber = $2)
  AND ($3::text IS NULL OR d.state = $3)
  AND ($4::text IS NULL OR e.channel = $4)
  AND ($5::text IS NULL OR d.created_at >= $5)
  AND ($6::text IS NULL OR d.created_at < $6)
  AND ($7::text IS NULL OR d.entity_key = $7)
ORDER BY d.id DESC
LIMIT $8;

-- name: get_delivery
SELECT d.id, d.event_id, d.subscriber, d.state, d.attempts, d.created_at, d.next_attempt_at,
       d.replay, d.last_status, d.last_error, d.finished_at, e.channel, d.entity_key
FROM deliveries d JOIN events e ON e.event_id = d.event_id
WHERE d.id = $1;

-- name: oldest_pending
-- The oldest delivery of each subscriber waiting or in flight: one index seek each (ids grow with created_at).
SELECT s.subscriber, (SELECT d.created_at FROM deliveries d
                      WHERE d.state = 'pending' AND d.subscriber = s.subscriber ORDER BY d.id LIMIT 1)
FROM unnest($1::text[]) AS s(subscriber);

-- name: oldest_pending_created_at
SELECT min(created_at) FROM deliveries WHERE state = 'pending';

-- name: make_due_now
-- An operator's "retry now": a waiting delivery becomes due; one in flight keeps its lease and finishes first.
UPDATE deliveries SET next_attempt_at = $2
WHERE id = $1 AND state = 'pending' AND next_attempt_at > $2;

-- name: list_attempts
SELECT attempt, started_at, duration_ms, status, error, response_excerpt
FROM attempts WHERE delivery_id = $1 ORDER BY attempt;

-- name: redrive_dead
UPDATE deliveries
SET state = 'pending', attempts = 0, next_attempt_at = $7, created_at = $7, lease_owner = NULL,
    lease_expires_at = NULL, lease_token = NULL, finished_at = NULL
WHERE state = 'dead'
  AND ($1::text IS NULL OR event_id = $1)
  AND ($2::text IS NULL OR subscriber = $2)
  AND ($3::text IS NULL OR entity_key = $3)
  AND ($4::text IS NULL OR created_at >= $4)
  AND ($5::text IS NULL OR created_at < $5)
  AND ($6::text IS NULL OR event_id IN (SELECT event_id FROM events WHERE channel = $6));

-- name: events_page
SELECT seq, event_id, channel, source, entity_key, version_order, payload, received_at
FROM events
WHERE ($1::text IS NULL OR channel = $1)
  AND ($2::text IS NULL OR event_id = $2)
  AND ($3::text IS NULL OR entity_key = $3)
  AND ($4::text IS NULL OR received_at >= $4)
  AND ($5::text IS NULL OR received_at < $5)
  AND ($6::text IS NULL OR source = $6)
  AND seq > $7
ORDER BY seq
LIMIT $8;

-- name: count_events_matching
SELECT count(*) FROM events
WHERE ($1::text IS NULL OR channel = $1)
  AND ($2::text IS NULL OR event_id = $2)
  AND ($3::text IS NULL OR entity_key = $3)
  AND ($4::text IS NULL OR received_at >= $4)
  AND ($5::text IS NULL OR received_at < $5)
  AND ($6::text IS NULL OR source = $6);

-- name: insert_replay_deliveries
INSERT INTO deliveries (event_id, subscriber, entity_key, version_order, state, created_at, next_attempt_at, replay)
SELECT r.event_id, r.subscriber, r.entity_key, r.version_order, 'pending', $5, $5, true
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY
     AS r(event_id, subscriber, entity_key, version_order, n)
ORDER BY r.n;

-- name: get_checkpoint
SELECT high_water, last_key, state, updated_at FROM checkpoints WHERE source = $1 AND resource = $2;

-- name: save_checkpoint
INSERT INTO checkpoints (source, resource, high_water, last_key, state, updated_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (source, resource) DO UPDATE
SET high_water = excluded.high_water, last_key = excluded.last_key, state = excluded.state,
    updated_at = excluded.updated_at;

-- name: record_hashes_for
SELECT record_key, hash FROM record_hashes
WHERE source = $1 AND resource = $2 AND record_key = ANY($3::text[]);

-- name: upsert_record_hashes
INSERT INTO record_hashes (source, resource, record_key, hash, seen_at)
SELECT $1, $2, r.record_key, r.hash, $5
FROM unnest($3::text[], $4::text[]) AS r(record_key, hash)
ON CONFLICT (source, resource, record_key) DO UPDATE SET hash = excluded.hash, seen_at = excluded.seen_at;

-- name: delete_record_hashes
DELETE FROM record_hashes WHERE source = $1 AND resource = $2 AND record_key = ANY($3::text[]);

-- name: all_record_keys
SELECT record_key FROM record_hashes WHERE source = $1 AND resource = $2;

-- name: prune_events
-- Retention: events older than the cutoff with no delivery still pending (deliveries and attempts cascade).
DELETE FROM events WHERE seq IN (
    SELECT e.seq FROM events e
    WHERE e.received_at < $1
      AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.event_id AND d.state = 'pending')
    ORDER BY e.received_at LIMIT $2);

-- name: future_schedule
SELECT id, next_attempt_at, lease_expires_at FROM deliveries
WHERE state = 'pending' AND (next_attempt_at > $1 OR lease_expires_at > $1);

-- name: shift_schedule
UPDATE deliveries d SET next_attempt_at = r.next_attempt_at, lease_expires_at = r.lease_expires_at
FROM unnest($1::bigint[], $2::text[], $3::text[]) AS r(id, next_attempt_at, lease_expires_at)
WHERE d.id = r.id;

-- name: confirm_source_lock
-- The outbox bound is counted and kept in one transaction per source, whichever instance queues.
SELECT pg_advisory_xact_lock(hashtextextended('ion_confirms:' || $1, 0));

-- name: count_ion_confirms
SELECT count(*) FROM ion_confirms WHERE source = $1;

-- name: insert_ion_confirm
INSERT INTO ion_confirms (source, created_at, bod_id, parameters, payload, next_attempt_at)
VALUES ($1, $2, $3, $4, $5, $2)
RETURNING id;

-- name: due_ion_confirms
SELECT id, source, created_at, bod_id, parameters, payload, attempts, last_error FROM ion_confirms
WHERE next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2;

-- name: next_ion_confirm_at
SELECT min(next_attempt_at) FROM ion_confirms;

-- name: delete_ion_confirm
DELETE FROM ion_confirms WHERE id = $1;

-- name: retry_ion_confirm
UPDATE ion_confirms SET attempts = $2, next_attempt_at = $3, last_error = $4 WHERE id = $1;

-- name: upsert_entity_state
-- The newest version of a key wins; an older one arriving later changes nothing (ties keep the first). The
-- caller sends one row per key (the newest of its batch): one statement cannot update a row twice.
INSERT INTO entity_state (noun, entity_key, channel, version, version_order, event_id, received_at, deleted, payload)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::boolean[], $9::bytea[])
ON CONFLICT (noun, entity_key) DO UPDATE SET
    channel = excluded.channel, version = excluded.version, version_order = excluded.version_order,
    event_id = excluded.event_id, received_at = excluded.received_at, deleted = excluded.deleted,
    payload = excluded.payload
WHERE excluded.version_order > entity_state.version_order;

-- name: get_entity_state
SELECT noun, entity_key, channel, version, event_id, received_at, deleted, payload
FROM entity_state WHERE noun = $1 AND entity_key = $2;

-- name: list_entity_state
-- Keys of a noun in key order from $2, after $3 (paging); the range test keeps the primary key in use.
SELECT noun, entity_key, channel, version, event_id, received_at, deleted, payload
FROM entity_state
WHERE noun = $1 AND entity_key >= $2 AND left(entity_key, length($2)) = $2 AND entity_key > $3
ORDER BY entity_key LIMIT $4;

-- name: rule_states_for
-- Read under `event_insert_lock`: rules of a key are evaluated by one transaction at a time across instances.
SELECT rule, entity_key, active, version_order, event_id FROM rule_state WHERE entity_key = ANY($1::text[]);

-- name: upsert_rule_state
INSERT INTO rule_state (rule, entity_key, active, version_order, event_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::boolean[], $4::text[], $5::text[])
ON CONFLICT (rule, entity_key) DO UPDATE SET
    active = excluded.active, version_order = excluded.version_order, event_id = excluded.event_id;

-- ------------------------------------------------------------------------------------------ commands

-- name: insert_command
-- The first request with a key creates the command; a repeat (here or on another instance, even one committing
-- right now: the insert waits for it) finds the existing row (see command_by_key).
INSERT INTO commands (id, source, command, idempotency_key, body_hash, body, order_key, reference, status,
                      attempts, next_attempt_at, window_start_at, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'accepted', 0, $9, $9, $9)
ON CONFLICT (source, idempotency_key) DO NOTHING;

-- name: command_by_key
SELECT id, source, command, idempotency_key, body_hash, body, order_key, reference, status, attempts,
       next_attempt_at, result, error, created_at, finished_at, window_start_at
FROM commands WHERE source = $1 AND idempotency_key = $2;

-- name: command_by_id
SELECT id, source, command, idempotency_key, body_hash, body, order_key, reference, status, attempts,
       next_attempt_at, result, error, created_at, finished_at, window_start_at
FROM commands WHERE id = $1;

-- name: claim_commands
-- Due commands of one source in submission order, each only when no older command of its order key is open
-- (accepted or running, by anyone): per-key order across instances, kept by the database. A `running` command
-- whose lease ran out (its executor died) is taken over. A row another instance is claiming is skipped, and the
-- commands of its key behind it stay blocked because it is still open in this statement's snapshot.
WITH claimed AS (
    UPDATE commands SET status = 'running', lease_owner = $1, lease_until = $2, attempts = attempts + 1
    WHERE id IN (
        SELECT c.id FROM commands c
        WHERE c.source = $3 AND c.status IN ('accepted', 'running') AND c.next_attempt_at <= $4
          AND (c.status = 'accepted' OR c.lease_until < $4)
          AND NOT EXISTS (
                SELECT 1 FROM commands o
                WHERE o.source = c.source AND o.order_key = c.order_key AND o.status IN ('accepted', 'running')
                  AND o.seq < c.seq)
        ORDER BY c.seq
        LIMIT $5
        FOR UPDATE OF c SKIP LOCKED)
    RETURNING seq, id, source, command, idempotency_key, body_hash, body, order_key, reference, status, attempts,
       next_attempt_at, result, error, created_at, finished_at, window_start_at)
SELECT id, source, command, idempotency_key, body_hash, body, order_key, reference, status, attempts,
       next_attempt_at, result, error, created_at, finished_at, window_start_at
FROM claimed ORDER BY seq;

-- name: finish_command
-- Only the lease holder finishes: an executor whose lease ran out and was taken over changes nothing.
UPDATE commands SET status = $3, result = $4, error = $5, finished_at = $6, lease_owner = NULL, lease_until = NULL
WHERE id = $1 AND status = 'running' AND lease_owner = $2;

-- name: reschedule_command
UPDATE commands SET status = 'accepted', next_attempt_at = $3, error = $4, lease_owner = NULL, lease_until = NULL
WHERE id = $1 AND status = 'running' AND lease_owner = $2;

-- name: retry_command
-- An operator restarts a failed command: a fresh retry window from now, attempts kept for the record.
UPDATE commands SET status = 'accepted', next_attempt_at = $2, window_start_at = $2, error = NULL, result = NULL,
                    finished_at = NULL
WHERE id = $1 AND status = 'failed';

-- name: renew_command_leases
-- Only the holder renews (each executor has its own owner id), and only while the command runs.
UPDATE commands SET lease_until = $2
WHERE id = ANY($3::text[]) AND lease_owner = $1 AND status = 'running'
RETURNING id;

-- name: release_command_leases
UPDATE commands SET status = 'accepted', lease_owner = NULL, lease_until = NULL
WHERE status = 'running' AND lease_owner = $1;

-- name: list_commands
SELECT id, source, command, idempotency_key, body_hash, body, order_key, reference, status, attempts,
       next_attempt_at, result, error, created_at, finished_at, window_start_at
FROM commands
WHERE ($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR command = $3)
ORDER BY seq DESC
LIMIT $4;

-- name: count_open_commands
SELECT source, command, count(*) FROM commands WHERE status IN ('accepted', 'running') GROUP BY source, command;

-- ------------------------------------------------------------------------------------------ observations

-- name: get_observation
SELECT value FROM resource_observations WHERE source = $1 AND resource = $2 AND kind = $3;

-- name: save_observation
INSERT INTO resource_observations (source, resource, kind, value, updated_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (source, resource, kind) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at;

-- name: copy_counts
-- Rows per table `relay store copy` fills: the target must start empty, and match the source before commit.
SELECT 'events', count(*) FROM events UNION ALL
SELECT 'deliveries', count(*) FROM deliveries UNION ALL
SELECT 'attempts', count(*) FROM attempts UNION ALL
SELECT 'quarantine', count(*) FROM quarantine UNION ALL
SELECT 'subscriber_state', count(*) FROM subscriber_state UNION ALL
SELECT 'key_state', count(*) FROM key_state UNION ALL
SELECT 'checkpoints', count(*) FROM checkpoints UNION ALL
SELECT 'record_hashes', count(*) FROM record_hashes UNION ALL
SELECT 'entity_state', count(*) FROM entity_state UNION ALL
SELECT 'rule_state', count(*) FROM rule_state UNION ALL
SELECT 'ion_confirms', count(*) FROM ion_confirms UNION ALL
SELECT 'commands', count(*) FROM commands UNION ALL
SELECT 'resource_observations', count(*) FROM resource_observations;

-- name: copy_column_types
SELECT column_name, data_type FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = $1;

-- name: copy_lock_tables
-- No relay writes the target while it is filled (a relay started too early waits, then sees the whole copy).
LOCK TABLE events, deliveries, attempts, quarantine, subscriber_state, key_state, checkpoints, record_hashes,
           entity_state, rule_state, ion_confirms, commands, resource_observations IN EXCLUSIVE MODE;

-- name: copy_reset_identities
-- Ids were copied as they were: new rows continue after the highest.
SELECT setval(pg_get_serial_sequence('events', 'seq'), (SELECT coalesce(max(seq), 0) + 1 FROM events), false),
       setval(pg_get_serial_sequence('deliveries', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM deliveries), false),
       setval(pg_get_serial_sequence('attempts', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM attempts), false),
       setval(pg_get_serial_sequence('quarantine', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM quarantine), false),
       setval(pg_get_serial_sequence('ion_confirms', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM ion_confirms),
              false),
       setval(pg_get_serial_sequence('commands', 'seq'), (SELECT coalesce(max(seq), 0) + 1 FROM commands), false);

-- name: notify_due
-- Deliveries became due: a hint to the instances LISTENing on $1; the payload names the sender.
SELECT pg_notify($1, $2);

-- name: hold_poll_lease
-- Taken when free or expired, renewed when ours; no row back while another instance holds it.
INSERT INTO poll_leases (source, resource, owner, expires_at)
VALUES ($1, $2, $3, clock_timestamp() + make_interval(secs => $4::float8))
ON CONFLICT (source, resource) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE poll_leases.owner = excluded.owner OR poll_leases.expires_at < clock_timestamp()
RETURNING owner;

-- name: renew_poll_leases
UPDATE poll_leases SET expires_at = clock_timestamp() + make_interval(secs => $2::float8) WHERE owner = $1;

-- name: release_poll_leases
DELETE FROM poll_leases WHERE owner = $1;

-- name: take_rate_tokens
-- $1 subscriber, $2 rate per second, $3 burst, $4 tokens wanted. A new bucket starts full; an existing one is
-- refilled for the time since its last take (never above the burst), then up to $4 whole tokens are taken.
-- Returns the tokens granted and the tokens left (a fraction when none could be granted).
INSERT INTO rate_buckets AS b (subscriber, tokens, granted, updated_at)
VALUES ($1, $3::float8 - least($4::int, floor($3::float8))::int, least($4::int, floor($3::float8))::int,
        statement_timestamp())
ON CONFLICT (subscriber) DO UPDATE SET
    granted = least($4::int, floor(least($3::float8, b.tokens
        + greatest(0, extract(epoch FROM statement_timestamp() - b.updated_at)) * $2::float8) + 1e-9))::int,
    tokens = least($3::float8, b.tokens
        + greatest(0, extract(epoch FROM statement_timestamp() - b.updated_at)) * $2::float8)
        - least($4::int, floor(least($3::float8, b.tokens
        + greatest(0, extract(epoch FROM statement_timestamp() - b.updated_at)) * $2::float8) + 1e-9))::int,
    updated_at = greatest(b.updated_at, statement_timestamp())
RETURNING granted, tokens;

-- name: return_rate_tokens
-- Tokens taken but not used (nothing was due) go back to the shared bucket, never above the burst ($3).
UPDATE rate_buckets SET tokens = least($3::float8, tokens + $2::float8) WHERE subscriber = $1;

-- name: heartbeat_instance
INSERT INTO instances (id, host, pid, version, started_at, heartbeat_at, poll_leases, deliveries_in_flight)
VALUES ($1, $2, $3, $4, $5, clock_timestamp(), $6, $7)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = clock_timestamp(), version = excluded.version,
    poll_leases = excluded.poll_leases, deliveries_in_flight = excluded.deliveries_in_flight;

-- name: prune_instances
DELETE FROM instances WHERE heartbeat_at < clock_timestamp() - make_interval(secs => $1::float8);

-- name: forget_instance
DELETE FROM instances WHERE id = $1;

-- name: list_instances
-- Live: a heartbeat within $1 seconds by the database server's clock.
SELECT id, host, pid, version, started_at, heartbeat_at, poll_leases, deliveries_in_flight
FROM instances WHERE heartbeat_at >= clock_timestamp() - make_interval(secs => $1::float8)
ORDER BY started_at, id;

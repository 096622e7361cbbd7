-- Named queries; `relay/store/` is the only code that runs SQL. Parameters are named (:name).

-- name: existing_event_ids
-- The ids among a batch that are already stored. `:ids` is replaced by one parameter per id: ids are bound one by one,
-- never as a JSON array (json_each in SQLite 3.40 cuts a string at an escaped NUL, and the id would not match).
SELECT event_id FROM events WHERE event_id IN (:ids);

-- name: insert_event
INSERT INTO events (event_id, channel, source, tenant_id, entity_key, version, version_order,
                    occurred_at, received_at, payload, original, original_type)
VALUES (:event_id, :channel, :source, :tenant_id, :entity_key, :version, :version_order,
        :occurred_at, :received_at, :payload, :original, :original_type);

-- name: insert_quarantine
INSERT INTO quarantine (received_at, source, channel, reason, details, content_type, size, body)
VALUES (:received_at, :source, :channel, :reason, :details, :content_type, :size, :body)
RETURNING id;

-- name: quarantine_bytes
-- The running total the triggers of migration 0004 keep.
SELECT bytes FROM quarantine_usage WHERE id = 1;

-- name: quarantine_oldest
-- Budget: the oldest entries after :after_id, never :keep_id (the one just stored) or newer.
SELECT id, size FROM quarantine WHERE id > :after_id AND id < :keep_id ORDER BY id LIMIT :limit;

-- name: drop_quarantine_through
DELETE FROM quarantine WHERE id <= :last_id;

-- name: prune_quarantine
-- Retention: quarantined inputs received before the cutoff, oldest first.
DELETE FROM quarantine WHERE id IN (
    SELECT id FROM quarantine WHERE received_at < :cutoff ORDER BY received_at LIMIT :limit);

-- name: touch_store_probe
INSERT INTO store_probe (id, checked_at) VALUES (1, :now)
ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at;

-- name: list_events
-- Oldest first after a cursor (`seq` grows in commit order: a follower that remembers the last one misses nothing).
SELECT seq, event_id, channel, source, tenant_id, entity_key, version, occurred_at, received_at,
       payload, original, original_type
FROM events
WHERE (:channel IS NULL OR channel = :channel)
  AND (:source IS NULL OR source = :source)
  AND (:entity_key IS NULL OR entity_key = :entity_key)
  AND (:event_id IS NULL OR event_id = :event_id)
  AND (:since IS NULL OR received_at >= :since)
  AND (:until IS NULL OR received_at < :until)
  AND seq > :after_seq
ORDER BY seq
LIMIT :limit;

-- name: list_events_newest
-- The console's and lists' order: the latest arrivals first (the same filters and lower bound).
SELECT seq, event_id, channel, source, tenant_id, entity_key, version, occurred_at, received_at,
       payload, original, original_type
FROM events
WHERE (:channel IS NULL OR channel = :channel)
  AND (:source IS NULL OR source = :source)
  AND (:entity_key IS NULL OR entity_key = :entity_key)
  AND (:event_id IS NULL OR event_id = :event_id)
  AND (:since IS NULL OR received_at >= :since)
  AND (:until IS NULL OR received_at < :until)
  AND seq > :after_seq
ORDER BY seq DESC
LIMIT :limit;

-- name: last_event_seq
SELECT coalesce(max(seq), 0) FROM events;

-- name: get_event
SELECT event_id, channel, source, tenant_id, entity_key, version, occurred_at, received_at,
       payload, original, original_type
FROM events WHERE event_id = :event_id;

-- name: count_events
SELECT count(*) FROM events;

-- name: list_quarantine
SELECT id, received_at, source, channel, reason, details, content_type, length(body)
FROM quarantine
WHERE (:source IS NULL OR source = :source)
ORDER BY id DESC
LIMIT :limit;

-- name: get_quarantine
SELECT id, received_at, source, channel, reason, details, content_type, body
FROM quarantine WHERE id = :id;

-- name: delete_quarantine
DELETE FROM quarantine WHERE id = :id;

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
);

-- name: applied_migrations
SELECT version FROM schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO schema_migrations (version, name, applied_at) VALUES (:version, :name, :applied_at);

-- name: ping
SELECT 1;

-- name: insert_delivery_checked
-- One delivery at ingest: `stale` when the subscriber already got a newer version of the key.
INSERT INTO deliveries (event_id, subscriber, entity_key, version_order, state, created_at,
                        next_attempt_at, replay)
SELECT :event_id, :subscriber, :entity_key, :version_order,
       CASE WHEN :check_stale = 1 AND :entity_key IS NOT NULL AND EXISTS (
                SELECT 1 FROM key_state k
                WHERE k.subscriber = :subscriber AND k.entity_key = :entity_key
                  AND k.delivered_version_order > :version_order)
            THEN 'stale' ELSE :state END,
       :created_at, :next_attempt_at, 0;

-- name: supersede_older
-- collapse: a newer version replaces pending, not in-flight, older deliveries of the same key.
UPDATE deliveries SET state = 'superseded', finished_at = :now, last_error = 'superseded by ' || :event_id
WHERE subscriber = :subscriber AND entity_key = :entity_key AND state = 'pending'
  AND version_order < :version_order AND replay = 0
  AND (lease_expires_at IS NULL OR lease_expires_at < :now);

-- name: claim_due
UPDATE deliveries SET lease_owner = :owner, lease_expires_at = :lease_until
WHERE id IN (
    SELECT d.id FROM deliveries d
    WHERE d.state = 'pending' AND d.subscriber = :subscriber AND d.next_attempt_at <= :now
      AND (d.lease_expires_at IS NULL OR d.lease_expires_at < :now)
    ORDER BY d.next_attempt_at, d.id
    LIMIT :limit)
RETURNING id;

-- name: claim_due_per_key
-- Per-key ordering: only the head of each key (lowest version, then oldest), and only when no other
-- delivery of that key is in flight; a key waiting for its retry blocks only itself.
UPDATE deliveries SET lease_owner = :owner, lease_expires_at = :lease_until
WHERE id IN (
    SELECT d.id FROM deliveries d
    WHERE d.state = 'pending' AND d.subscriber = :subscriber AND d.next_attempt_at <= :now
      AND (d.lease_expires_at IS NULL OR d.lease_expires_at < :now)
      AND (d.entity_key IS NULL OR NOT EXISTS (
            SELECT 1 FROM deliveries o INDEXED BY deliveries_key
            WHERE o.subscriber = d.subscriber AND o.entity_key = d.entity_key AND o.state = 'pending'
              AND o.id <> d.id
              AND (o.version_order < d.version_order
                   OR (o.version_order = d.version_order AND o.id < d.id)
                   OR o.lease_expires_at >= :now)))
    ORDER BY d.next_attempt_at, d.id
    LIMIT :limit)
RETURNING id;

-- name: claimed_details
SELECT d.id, d.subscriber, d.attempts, d.created_at, d.replay, d.entity_key, d.version_order,
       e.event_id, e.channel, e.source, e.received_at, e.payload, e.original, e.original_type
FROM deliveries d JOIN events e ON e.event_id = d.event_id
WHERE d.id IN (SELECT value FROM json_each(:ids));

-- name: insert_attempt
INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status, error, response_excerpt)
VALUES (:delivery_id, :attempt, :started_at, :duration_ms, :status, :error, :response_excerpt);

-- name: finish_delivery
-- Applies the retry policy's decision; only the lease holder may (a lost lease means another took it).
UPDATE deliveries
SET state = :state, attempts = :attempt, next_attempt_at = coalesce(:next_attempt_at, next_attempt_at),
    lease_owner = NULL, lease_expires_at = NULL, last_status = :status, last_error = :error,
    finished_at = :finished_at
WHERE id = :delivery_id AND lease_owner = :owner;

-- name: record_key_delivered
INSERT INTO key_state (subscriber, entity_key, delivered_version_order)
VALUES (:subscriber, :entity_key, :version_order)
ON CONFLICT (subscriber, entity_key) DO UPDATE
SET delivered_version_order = max(delivered_version_order, excluded.delivered_version_order);

-- name: mark_older_stale
UPDATE deliveries SET state = 'stale', finished_at = :now,
       last_error = 'stale: a newer version was delivered'
WHERE subscriber = :subscriber AND entity_key = :entity_key AND state = 'pending'
  AND version_order < :version_order AND replay = 0
  AND (lease_expires_at IS NULL OR lease_expires_at < :now);

-- name: touch_subscriber_success
INSERT INTO subscriber_state (subscriber, last_success_at) VALUES (:subscriber, :now)
ON CONFLICT (subscriber) DO UPDATE SET last_success_at = max(coalesce(last_success_at, ''), excluded.last_success_at);

-- name: renew_leases
-- Only the holder renews, and only while the delivery is still pending: a completed attempt has no lease left.
-- `:ids` is replaced by one parameter per delivery id (as for existing_event_ids).
UPDATE deliveries SET lease_expires_at = :lease_until
WHERE id IN (:ids) AND lease_owner = :owner AND state = 'pending'
RETURNING id;

-- name: release_leases
UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL
WHERE lease_owner = :owner AND state = 'pending';

-- name: set_subscriber_disabled
INSERT INTO subscriber_state (subscriber, disabled, disabled_reason, disabled_at)
VALUES (:subscriber, :disabled, :reason, :now)
ON CONFLICT (subscriber) DO UPDATE
SET disabled = excluded.disabled, disabled_reason = excluded.disabled_reason, disabled_at = excluded.disabled_at;

-- name: set_circuit_state
INSERT INTO subscriber_state (subscriber, circuit_state, circuit_changed_at) VALUES (:subscriber, :state, :now)
ON CONFLICT (subscriber) DO UPDATE
SET circuit_state = excluded.circuit_state, circuit_changed_at = excluded.circuit_changed_at;

-- name: subscriber_states
SELECT subscriber, disabled, disabled_reason, disabled_at, last_success_at, circuit_state, circuit_changed_at
FROM subscriber_state;

-- name: delivery_counts
SELECT subscriber, state, count(*) FROM deliveries
WHERE state IN ('pending', 'dead') GROUP BY subscriber, state;

-- name: oldest_pending
-- The oldest delivery of one subscriber waiting or in flight: one index seek (ids grow with created_at).
SELECT created_at FROM deliveries INDEXED BY deliveries_state
WHERE state = 'pending' AND subscriber = :subscriber ORDER BY id LIMIT 1;

-- name: next_due_at
SELECT min(next_attempt_at) FROM deliveries INDEXED BY deliveries_due WHERE state = 'pending';

-- name: list_deliveries
SELECT d.id, d.event_id, d.subscriber, d.state, d.attempts, d.created_at, d.next_attempt_at,
       d.replay, d.last_status, d.last_error, d.finished_at, e.channel, d.entity_key
FROM deliveries d JOIN events e ON e.event_id = d.event_id
WHERE (:event_id IS NULL OR d.event_id = :event_id)
  AND (:subscriber IS NULL OR d.subscriber = :subscriber)
  AND (:state IS NULL OR d.state = :state)
  AND (:channel IS NULL OR e.channel = :channel)
  AND (:since IS NULL OR d.created_at >= :since)
  AND (:until IS NULL OR d.created_at < :until)
  AND (:entity_key IS NULL OR d.entity_key = :entity_key)
ORDER BY d.id DESC
LIMIT :limit;

-- name: get_delivery
SELECT d.id, d.event_id, d.subscriber, d.state, d.attempts, d.created_at, d.next_attempt_at,
       d.replay, d.last_status, d.last_error, d.finished_at, e.channel, d.entity_key
FROM deliveries d JOIN events e ON e.event_id = d.event_id
WHERE d.id = :delivery_id;

-- name: list_attempts
SELECT attempt, started_at, duration_ms, status, error, response_excerpt
FROM attempts WHERE delivery_id = :delivery_id ORDER BY attempt;

-- name: oldest_pending_created_at
SELECT min(created_at) FROM deliveries INDEXED BY deliveries_state WHERE state = 'pending';

-- name: make_due_now
-- An operator's "retry now": a waiting delivery becomes due; one in flight keeps its lease and finishes first.
UPDATE deliveries SET next_attempt_at = :now
WHERE id = :delivery_id AND state = 'pending' AND next_attempt_at > :now;

-- name: redrive_dead
UPDATE deliveries
SET state = 'pending', attempts = 0, next_attempt_at = :now, created_at = :now, lease_owner = NULL,
    lease_expires_at = NULL, finished_at = NULL
WHERE state = 'dead'
  AND (:event_id IS NULL OR event_id = :event_id)
  AND (:subscriber IS NULL OR subscriber = :subscriber)
  AND (:entity_key IS NULL OR entity_key = :entity_key)
  AND (:since IS NULL OR created_at >= :since)
  AND (:until IS NULL OR created_at < :until)
  AND (:channel IS NULL OR event_id IN (SELECT event_id FROM events WHERE channel = :channel));

-- name: events_page
SELECT seq, event_id, channel, source, entity_key, version_order, payload, received_at
FROM events
WHERE (:channel IS NULL OR channel = :channel)
  AND (:source IS NULL OR source = :source)
  AND (:event_id IS NULL OR event_id = :event_id)
  AND (:entity_key IS NULL OR entity_key = :entity_key)
  AND (:since IS NULL OR received_at >= :since)
  AND (:until IS NULL OR received_at < :until)
  AND seq > :after_seq
ORDER BY seq
LIMIT :limit;

-- name: count_events_matching
SELECT count(*) FROM events
WHERE (:channel IS NULL OR channel = :channel)
  AND (:source IS NULL OR source = :source)
  AND (:event_id IS NULL OR event_id = :event_id)
  AND (:entity_key IS NULL OR entity_key = :entity_key)
  AND (:since IS NULL OR received_at >= :since)
  AND (:until IS NULL OR received_at < :until);

-- name: insert_replay_delivery
INSERT INTO deliveries (event_id, subscriber, entity_key, version_order, state, created_at,
                        next_attempt_at, replay)
VALUES (:event_id, :subscriber, :entity_key, :version_order, 'pending', :now, :now, 1);

-- name: get_checkpoint
SELECT high_water, last_key, state, updated_at FROM checkpoints WHERE source = :source AND resource = :resource;

-- name: save_checkpoint
INSERT INTO checkpoints (source, resource, high_water, last_key, state, updated_at)
VALUES (:source, :resource, :high_water, :last_key, :state, :updated_at)
ON CONFLICT (source, resource) DO UPDATE
SET high_water = excluded.high_water, last_key = excluded.last_key, state = excluded.state,
    updated_at = excluded.updated_at;

-- name: record_hashes_for
-- `:ids` is replaced by one parameter per record key (bound one by one, as for existing_event_ids).
SELECT record_key, hash FROM record_hashes
WHERE source = :source AND resource = :resource AND record_key IN (:ids);

-- name: upsert_record_hash
INSERT INTO record_hashes (source, resource, record_key, hash, seen_at)
VALUES (:source, :resource, :record_key, :hash, :seen_at)
ON CONFLICT (source, resource, record_key) DO UPDATE SET hash = excluded.hash, seen_at = excluded.seen_at;

-- name: delete_record_hash
DELETE FROM record_hashes WHERE source = :source AND resource = :resource AND record_key = :record_key;

-- name: all_record_keys
SELECT record_key FROM record_hashes WHERE source = :source AND resource = :resource;

-- name: prune_events
-- Retention: events older than the cutoff with no delivery still pending (deliveries and attempts cascade).
DELETE FROM events WHERE seq IN (
    SELECT e.seq FROM events e
    WHERE e.received_at < :cutoff
      AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.event_id AND d.state = 'pending')
    ORDER BY e.received_at LIMIT :limit);  -- by received_at: a range of its index, not a scan of every event

-- name: future_schedule
-- What a clock step moves: pending deliveries due after :since and leases that run past it.
SELECT id, next_attempt_at, lease_expires_at FROM deliveries
WHERE state = 'pending' AND (next_attempt_at > :since OR lease_expires_at > :since);

-- name: shift_schedule
UPDATE deliveries SET next_attempt_at = :next_attempt_at, lease_expires_at = :lease_expires_at WHERE id = :id;

-- name: count_ion_confirms
-- The outbox bound: how many ConfirmBODs of one source are waiting.
SELECT count(*) FROM ion_confirms WHERE source = :source;

-- name: insert_ion_confirm
INSERT INTO ion_confirms (source, created_at, bod_id, parameters, payload, next_attempt_at)
VALUES (:source, :created_at, :bod_id, :parameters, :payload, :created_at)
RETURNING id;

-- name: due_ion_confirms
SELECT id, source, created_at, bod_id, parameters, payload, attempts, last_error FROM ion_confirms
WHERE next_attempt_at <= :now ORDER BY next_attempt_at, id LIMIT :limit;

-- name: next_ion_confirm_at
SELECT min(next_attempt_at) FROM ion_confirms;

-- name: delete_ion_confirm
DELETE FROM ion_confirms WHERE id = :id;

-- name: retry_ion_confirm
UPDATE ion_confirms SET attempts = :attempts, next_attempt_at = :next_attempt_at, last_error = :last_error
WHERE id = :id;
-- name: upsert_entity_state
-- The newest version of a key wins; an older one arriving later changes nothing (ties keep the first).
INSERT INTO entity_state (noun, entity_key, channel, version, version_order, event_id, received_at, deleted, payload)
VALUES (:noun, :entity_key, :channel, :version, :version_order, :event_id, :received_at, :deleted, :payload)
ON CONFLICT (noun, entity_key) DO UPDATE SET
    channel = excluded.channel, version = excluded.version, version_order = excluded.version_order,
    event_id = excluded.event_id, received_at = excluded.received_at, deleted = excluded.deleted,
    payload = excluded.payload
WHERE excluded.version_order > entity_state.version_order;

-- name: get_entity_state
SELECT noun, entity_key, channel, version, event_id, received_at, deleted, payload
FROM entity_state WHERE noun = :noun AND entity_key = :entity_key;

-- name: list_entity_state
-- Keys of a noun in key order from :prefix, after :after (paging); the range test keeps the primary key in use.
SELECT noun, entity_key, channel, version, event_id, received_at, deleted, payload
FROM entity_state
WHERE noun = :noun AND entity_key >= :prefix AND substr(entity_key, 1, length(:prefix)) = :prefix
  AND entity_key > :after
ORDER BY entity_key LIMIT :limit;

-- name: rule_states_for
-- Where the rules stand for the keys of a batch. `:ids` is replaced by one parameter per key.
SELECT rule, entity_key, active, version_order, event_id FROM rule_state WHERE entity_key IN (:ids);

-- name: upsert_rule_state
INSERT INTO rule_state (rule, entity_key, active, version_order, event_id)
VALUES (:rule, :entity_key, :active, :version_order, :event_id)
ON CONFLICT (rule, entity_key) DO UPDATE SET
    active = excluded.active, version_order = excluded.version_order, event_id = excluded.event_id;

-- ------------------------------------------------------------------------------------------ commands

-- name: insert_command
-- The first request with a key creates the command; a repeat finds the existing row (see command_by_key).
INSERT INTO commands (id, source, command, idempotency_key, body_hash, body, order_key, reference, status,
                      attempts, next_attempt_at, window_start_at, created_at)
VALUES (:id, :source, :command, :idempotency_key, :body_hash, :body, :order_key, :reference, 'accepted',
        0, :now, :now, :now)
ON CONFLICT (source, idempotency_key) DO NOTHING;

-- name: command_by_key
SELECT id, source, command, idempotency_key, body_hash, body, order_key, reference, status, attempts,
       next_attempt_at, result, error, created_at, finished_at, window_start_at
FROM commands WHERE source = :source AND idempotency_key = :idempotency_key;

-- name: command_by_id
SELECT id, source, command, idempotency_key, body_hash, body, order_key, reference, status, attempts,
       next_attempt_at, result, error, created_at, finished_at, window_start_at
FROM commands WHERE id = :id;

-- name: claim_commands
-- Due commands of one source, oldest first, each only when no older command of its key is still open
-- (per-key order); a `running` command whose lease ran out (its executor died) is taken over.
UPDATE commands SET status = 'running', lease_owner = :owner, lease_until = :lease_until, attempts = attempts + 1
WHERE id IN (
    SELECT c.id FROM commands c
    WHERE c.source = :source AND c.status IN ('accepted', 'running') AND c.next_attempt_at <= :now
      AND (c.status = 'accepted' OR c.lease_until < :now)
      AND NOT EXISTS (
            SELECT 1 FROM commands o
            WHERE o.source = c.source AND o.order_key = c.order_key AND o.id <> c.id
              AND o.status IN ('accepted', 'running') AND o.rowid < c.rowid)
    ORDER BY c.rowid
    LIMIT :limit)
RETURNING id;

-- name: finish_command
UPDATE commands SET status = :status, result = :result, error = :error, finished_at = :now,
                    lease_owner = NULL, lease_until = NULL
WHERE id = :id AND status = 'running' AND lease_owner = :owner;

-- name: reschedule_command
UPDATE commands SET status = 'accepted', next_attempt_at = :next_attempt_at, error = :error,
                    lease_owner = NULL, lease_until = NULL
WHERE id = :id AND status = 'running' AND lease_owner = :owner;

-- name: retry_command
-- An operator restarts a failed command: a fresh retry window from now, attempts kept for the record.
UPDATE commands SET status = 'accepted', next_attempt_at = :now, window_start_at = :now, error = NULL,
                    result = NULL, finished_at = NULL
WHERE id = :id AND status = 'failed';

-- name: renew_command_leases
-- Only the holder renews, and only while the command runs: a finished or rescheduled command has no lease left.
-- `:ids` is replaced by one parameter per command id (as for existing_event_ids).
UPDATE commands SET lease_until = :lease_until
WHERE id IN (:ids) AND lease_owner = :owner AND status = 'running'
RETURNING id;

-- name: release_command_leases
UPDATE commands SET status = 'accepted', lease_owner = NULL, lease_until = NULL
WHERE status = 'running' AND lease_owner = :owner;

-- name: list_commands
SELECT id, source, command, idempotency_key, body_hash, body, order_key, reference, status, attempts,
       next_attempt_at, result, error, created_at, finished_at, window_start_at
FROM commands
WHERE (:source IS NULL OR source = :source) AND (:status IS NULL OR status = :status)
  AND (:command IS NULL OR command = :command)
ORDER BY rowid DESC
LIMIT :limit;

-- name: count_open_commands
SELECT source, command, count(*) FROM commands WHERE status IN ('accepted', 'running') GROUP BY source, command;

-- name: next_command_due
SELECT min(next_attempt_at) FROM commands WHERE source = :source AND status = 'accepted';

-- name: get_observation
SELECT value FROM resource_observations WHERE source = :source AND resource = :resource AND kind = :kind;

-- name: save_observation
INSERT INTO resource_observations (source, resource, kind, value, updated_at)
VALUES (:source, :resource, :kind, :value, :updated_at)
ON CONFLICT (source, resource, kind) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at;
-- name: copy_events
-- `relay store copy` reads every table whole, in key order; the column names are the target's too.
SELECT seq, event_id, channel, source, tenant_id, entity_key, version, version_order, occurred_at, received_at,
       payload, original, original_type
FROM events ORDER BY seq;

-- name: copy_deliveries
SELECT id, event_id, subscriber, entity_key, version_order, state, attempts, created_at, next_attempt_at,
       lease_owner, lease_expires_at, replay, last_status, last_error, finished_at
FROM deliveries ORDER BY id;

-- name: copy_attempts
SELECT id, delivery_id, attempt, started_at, duration_ms, status, error, response_excerpt FROM attempts ORDER BY id;

-- name: copy_quarantine
SELECT id, received_at, source, channel, reason, details, content_type, size, body FROM quarantine ORDER BY id;

-- name: copy_subscriber_state
SELECT subscriber, disabled, disabled_reason, disabled_at, last_success_at, circuit_state, circuit_changed_at
FROM subscriber_state ORDER BY subscriber;

-- name: copy_key_state
SELECT subscriber, entity_key, delivered_version_order FROM key_state ORDER BY subscriber, entity_key;

-- name: copy_checkpoints
SELECT source, resource, high_water, last_key, state, updated_at FROM checkpoints ORDER BY source, resource;

-- name: copy_record_hashes
SELECT source, resource, record_key, hash, seen_at FROM record_hashes ORDER BY source, resource, record_key;

-- name: copy_entity_state
SELECT noun, entity_key, channel, version, version_order, event_id, received_at, deleted, payload
FROM entity_state ORDER BY noun, entity_key;

-- name: copy_rule_state
SELECT rule, entity_key, active, version_order, event_id FROM rule_state ORDER BY rule, entity_key;

-- name: copy_ion_confirms
SELECT id, source, created_at, bod_id, parameters, payload, attempts, next_attempt_at, last_error
FROM ion_confirms ORDER BY id;

-- name: copy_commands
-- The rowid is the submission order: PostgreSQL keeps it as `seq`, the order claims walk.
SELECT rowid AS seq, id, source, command, idempotency_key, body_hash, body, order_key, reference, status, attempts,
       next_attempt_at, lease_owner, lease_until, result, error, window_start_at, created_at, finished_at
FROM commands ORDER BY rowid;

-- name: copy_resource_observations
SELECT source, resource, kind, value, updated_at FROM resource_observations ORDER BY source, resource, kind;

-- name: copy_counts
-- Rows per copied table: compared with the target's before the copy commits.
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

-- name: heartbeat_instance
INSERT INTO instances (id, host, pid, version, started_at, heartbeat_at, poll_leases, deliveries_in_flight)
VALUES (:id, :host, :pid, :version, :started_at, :now, :poll_leases, :deliveries_in_flight)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, version = excluded.version,
    poll_leases = excluded.poll_leases, deliveries_in_flight = excluded.deliveries_in_flight;

-- name: prune_instances
DELETE FROM instances WHERE heartbeat_at < :cutoff;

-- name: forget_instance
DELETE FROM instances WHERE id = :id;

-- name: list_instances
SELECT id, host, pid, version, started_at, heartbeat_at, poll_leases, deliveries_in_flight
FROM instances WHERE heartbeat_at >= :cutoff
ORDER BY started_at, id;

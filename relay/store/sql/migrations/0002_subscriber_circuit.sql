-- The circuit breaker's state as last seen by the dispatcher, so `relay subscribers list` can show it.
ALTER TABLE subscriber_state ADD COLUMN circuit_state TEXT NOT NULL DEFAULT 'closed';
ALTER TABLE subscriber_state ADD COLUMN circuit_changed_at TEXT;

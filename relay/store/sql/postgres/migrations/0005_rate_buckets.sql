-- A subscriber's `rate_limit` holds across every instance on the database: one token bucket per subscriber,
-- refilled by the database server's clock and taken from atomically by a single UPDATE. `granted` is how many
-- tokens the last take got (an upsert's RETURNING sees only the new row).
CREATE TABLE rate_buckets (
    subscriber  text             PRIMARY KEY,
    tokens      double precision NOT NULL,
    granted     integer          NOT NULL DEFAULT 0,
    updated_at  timestamptz      NOT NULL
);

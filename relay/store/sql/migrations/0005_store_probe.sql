-- After a failed commit, `/readyz` writes this one row to learn whether writes succeed again.
CREATE TABLE store_probe (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at  TEXT NOT NULL
);

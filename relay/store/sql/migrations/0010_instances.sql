-- Each running `relay serve` records itself here with a heartbeat, for `relay instances`: on SQLite the one
-- process. The counts are as of the last heartbeat. Rows of instances gone for an hour are pruned.
CREATE TABLE instances (
    id                    TEXT    PRIMARY KEY,
    host                  TEXT    NOT NULL,
    pid                   INTEGER NOT NULL,
    version               TEXT    NOT NULL,
    started_at            TEXT    NOT NULL,
    heartbeat_at          TEXT    NOT NULL,
    poll_leases           INTEGER NOT NULL,
    deliveries_in_flight  INTEGER NOT NULL
);

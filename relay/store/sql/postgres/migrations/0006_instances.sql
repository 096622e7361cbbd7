-- Each running `relay serve` records itself here with a heartbeat on the database server's clock (one clock for
-- every instance), for `relay instances`. The counts are as of the last heartbeat. Rows of instances gone for an
-- hour are pruned.
CREATE TABLE instances (
    id                    text        PRIMARY KEY,
    host                  text        NOT NULL,
    pid                   integer     NOT NULL,
    version               text        NOT NULL,
    started_at            timestamptz NOT NULL,
    heartbeat_at          timestamptz NOT NULL,
    poll_leases           integer     NOT NULL,
    deliveries_in_flight  integer     NOT NULL
);

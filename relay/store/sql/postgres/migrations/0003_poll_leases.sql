-- Each polled (source, resource) is polled by one instance at a time: the holder renews its lease while it
-- lives; another instance takes a lease once it has expired. Times are the database server's clock, one clock
-- for every instance.
CREATE TABLE poll_leases (
    source      text        NOT NULL,
    resource    text        NOT NULL,
    owner       text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (source, resource)
);
CREATE INDEX poll_leases_owner ON poll_leases (owner);

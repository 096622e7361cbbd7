-- Claims walk one subscriber's pending deliveries in due order and stop at the limit; without this index
-- SQLite sorted every pending delivery of the subscriber on each claim (a replay of 100,000 paid that each time).
CREATE INDEX deliveries_claim ON deliveries (subscriber, next_attempt_at, id) WHERE state = 'pending';

-- The gauges count pending and dead deliveries per subscriber every second: with state first that reads only
-- those rows, not every delivered one.
DROP INDEX deliveries_subscriber_state;
CREATE INDEX deliveries_state ON deliveries (state, subscriber);

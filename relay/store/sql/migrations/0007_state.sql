-- The current state of every business key, and where each derived-event rule stands per key.

-- The latest event of each (noun, entity key) by version, kept with its payload so that pruning old events
-- does not lose it. A deletion (`<noun>/deleted`) is the latest state too, with `deleted` set.
CREATE TABLE entity_state (
    noun           TEXT    NOT NULL,
    entity_key     TEXT    NOT NULL,
    channel        TEXT    NOT NULL,
    version        TEXT,
    version_order  TEXT    NOT NULL,
    event_id       TEXT    NOT NULL,
    received_at    TEXT    NOT NULL,
    deleted        INTEGER NOT NULL,
    payload        BLOB    NOT NULL,
    PRIMARY KEY (noun, entity_key)
) WITHOUT ROWID;

-- Edge-triggered rules: whether a rule has fired for a key (and not cleared since), as of which version.
CREATE TABLE rule_state (
    rule           TEXT    NOT NULL,
    entity_key     TEXT    NOT NULL,
    active         INTEGER NOT NULL,
    version_order  TEXT    NOT NULL,
    event_id       TEXT    NOT NULL,
    PRIMARY KEY (rule, entity_key)
) WITHOUT ROWID;

-- ConfirmBODs waiting to go back to ION (a refused BOD whose sender asked for one): the outbox the confirm
-- sender drains. A row is deleted once ION accepted it or the relay gave up, so the table holds pending work only.
CREATE TABLE ion_confirms (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    source           TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    bod_id           TEXT,
    parameters       TEXT    NOT NULL,
    payload          BLOB    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT    NOT NULL,
    last_error       TEXT
);
CREATE INDEX ion_confirms_due ON ion_confirms (next_attempt_at);

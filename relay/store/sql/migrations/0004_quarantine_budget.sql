-- Quarantine keeps within a size budget: each row records its size before the body (so reading it never walks
-- the body's overflow pages), and one row holds the running total, kept by triggers on every insert and delete
-- (ingest, `relay quarantine retry`, retention), so the budget is checked without summing the table.
CREATE TABLE quarantine_sized (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at   TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    channel       TEXT,
    reason        TEXT    NOT NULL,
    details       TEXT    NOT NULL DEFAULT '[]',
    content_type  TEXT,
    size          INTEGER NOT NULL,
    body          BLOB    NOT NULL
);
INSERT INTO quarantine_sized (id, received_at, source, channel, reason, details, content_type, size, body)
SELECT id, received_at, source, channel, reason, details, content_type,
       length(body) + length(CAST(reason AS BLOB)) + length(CAST(details AS BLOB)), body
FROM quarantine;
DROP TABLE quarantine;
ALTER TABLE quarantine_sized RENAME TO quarantine;
CREATE INDEX quarantine_received_at ON quarantine (received_at);

CREATE TABLE quarantine_usage (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    bytes  INTEGER NOT NULL
);
INSERT INTO quarantine_usage (id, bytes) SELECT 1, coalesce(sum(size), 0) FROM quarantine;

CREATE TRIGGER quarantine_usage_insert AFTER INSERT ON quarantine
BEGIN
    UPDATE quarantine_usage SET bytes = bytes + NEW.size WHERE id = 1;
END;

CREATE TRIGGER quarantine_usage_delete AFTER DELETE ON quarantine
BEGIN
    UPDATE quarantine_usage SET bytes = bytes - OLD.size WHERE id = 1;
END;

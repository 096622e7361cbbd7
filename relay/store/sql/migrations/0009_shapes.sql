-- What the relay has observed of each polled or pushed resource, one JSON document per kind: `shape` (field
-- path → JSON types of the raw records, for schema drift) and `health` (failure streak and whether a failing
-- state was announced). Kept so that a restart neither re-announces drift nor a health transition.
CREATE TABLE resource_observations (
    source      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (source, resource, kind)
) WITHOUT ROWID;

"""`relay store copy`: move an SQLite installation into an empty PostgreSQL database, verbatim and verified.

Both schemas store the same columns with the same text timestamps, so rows move as they are: ids, states,
attempts and leases included. The target is filled in one transaction with `COPY`; its row counts are compared
with the source's before that transaction commits, so a copy is either whole and verified or not there at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite
import asyncpg

from relay.store._sql import queries
from relay.store.postgres import PostgresStore, postgres_target
from relay.store.sqlite import SqliteStore, sqlite_path_from_url

__all__ = ["COPIED_TABLES", "CopyError", "TableCount", "convert_value", "copy_store"]

#: What is copied, parents before children (deliveries name events, attempts name deliveries).
COPIED_TABLES = (
    "events",
    "deliveries",
    "attempts",
    "quarantine",
    "subscriber_state",
    "key_state",
    "checkpoints",
    "record_hashes",
    "entity_state",
    "rule_state",
    "ion_confirms",
    "commands",
    "resource_observations",
)
_CHUNK_ROWS = 5000


class CopyError(Exception):
    """The copy cannot start or did not verify; nothing was written to the target."""


@dataclass(frozen=True, slots=True)
class TableCount:
    """Rows of one table in the source and, after the copy, in the target."""

    table: str
    source: int
    target: int


def convert_value(value: Any, pg_type: str) -> Any:
    """One SQLite value as the PostgreSQL column of type `pg_type` takes it (pure).

    SQLite keeps booleans as 0/1 and may hand back text where bytes are stored (or the reverse); None stays None.
    """
    if value is None:
        return None
    if pg_type == "boolean":
        return bool(value)
    if pg_type == "bytea":
        return value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if pg_type in ("integer", "bigint", "smallint"):
        return int(value)
    if pg_type in ("double precision", "real"):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value) if not isinstance(value, str) else value


async def copy_store(
    from_url: str, to_url: str, *, progress: Callable[[str, int], None] | None = None
) -> list[TableCount]:
    """Copy every table of the SQLite store at `from_url` into the empty PostgreSQL database at `to_url`.

    Both stores are migrated to this relay's schema first (as `relay serve` would). Stop the relay that uses the
    source before copying: what it writes during the copy is not copied.

    Args:
        progress: called with (table, rows copied so far) after each chunk.

    Returns:
        The row counts of each table, equal in source and target.

    Raises:
        CopyError: a URL of the wrong kind, a target that holds data, or counts that differ after the copy.
        StoreUnavailable: either store cannot be opened (unreachable, newer schema, unreadable file).
    """
    if not from_url.startswith("sqlite://"):
        raise CopyError("the source must be an sqlite:// store URL")
    if not to_url.startswith(("postgresql://", "postgres://")):
        raise CopyError("the target must be a postgresql:// store URL")
    path = sqlite_path_from_url(from_url)
    if not path.is_file():
        raise CopyError(f"the source {path} does not exist")
    for store in (SqliteStore(path), PostgresStore(to_url)):  # migrated to this relay's schema, then closed
        await store.open()
        await store.close()
    target = postgres_target(to_url)
    lite_q, pg_q = queries("sqlite"), queries("postgres")
    source = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn = await asyncpg.connect(target.dsn, password=target.password)
        try:
            async with conn.transaction():
                await conn.execute(pg_q["copy_lock_tables"])
                held = {str(r[0]): int(r[1]) for r in await conn.fetch(pg_q["copy_counts"])}
                if any(held.values()):
                    filled = ", ".join(f"{n} {t}" for t, n in held.items() if n)
                    raise CopyError(f"the target database at {target} is not empty ({filled}): copy into a new one")
                for table in COPIED_TABLES:
                    types = {str(r[0]): str(r[1]) for r in await conn.fetch(pg_q["copy_column_types"], table)}
                    await _copy_table(source, conn, table, lite_q[f"copy_{table}"], types, progress)
                await conn.execute(pg_q["copy_reset_identities"])
                before = {str(r[0]): int(r[1]) for r in await source.execute_fetchall(lite_q["copy_counts"])}
                after = {str(r[0]): int(r[1]) for r in await conn.fetch(pg_q["copy_counts"])}
                counts = [TableCount(t, before.get(t, 0), after.get(t, 0)) for t in COPIED_TABLES]
                differ = [c for c in counts if c.source != c.target]
                if differ:  # raising rolls the whole copy back
                    raise CopyError(
                        "counts differ after the copy, nothing kept: "
                        + ", ".join(f"{c.table} {c.source} → {c.target}" for c in differ)
                    )
        finally:
            await conn.close()
    finally:
        await source.close()
    return counts


async def _copy_table(
    source: aiosqlite.Connection,
    conn: asyncpg.Connection,
    table: str,
    select: str,
    types: dict[str, str],
    progress: Callable[[str, int], None] | None,
) -> None:
    cursor = await source.execute(select)
    columns = [d[0] for d in cursor.description]
    missing = [c for c in columns if c not in types]
    if missing:
        raise CopyError(f"the target's {table} table has no column {missing[0]}: migrate it with this relay")
    column_types = [types[c] for c in columns]
    copied = 0
    last_report = time.monotonic()
    while rows := list(await cursor.fetchmany(_CHUNK_ROWS)):
        await conn.copy_records_to_table(table, records=_converted(rows, column_types), columns=columns)
        copied += len(rows)
        if progress is not None and (time.monotonic() - last_report >= 1.0 or len(rows) < _CHUNK_ROWS):
            progress(table, copied)
            last_report = time.monotonic()
    await cursor.close()


def _converted(rows: Iterable[Sequence[Any]], column_types: Sequence[str]) -> list[tuple[Any, ...]]:
    return [tuple(convert_value(v, t) for v, t in zip(row, column_types, strict=True)) for row in rows]

"""Migrations carry an existing SQLite database forward without losing what it holds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from relay.events import parse_ts
from relay.store import QuarantineEntry, create_store
from relay.store._sql import migrations


async def test_quarantine_budget_migration_keeps_entries_and_counts_their_bytes(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)")
        for migration in migrations("sqlite")[:3]:
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, '')", (migration.version, migration.name))
        conn.executemany(
            "INSERT INTO quarantine (received_at, source, reason, details, body) VALUES (?, 'hub', ?, '[]', ?)",
            [("2026-11-20T09:00:00.000000Z", "bad", b"{" * 100), ("2026-11-20T09:00:01.000000Z", "worse", b"[")],
        )
    store = create_store(f"sqlite://{path}", quarantine_max_bytes=1_000_000)
    await store.open()
    try:
        rows = await store.list_quarantine()
        assert [(r.reason, r.size) for r in rows] == [("worse", 1), ("bad", 100)]
        # The running total starts from what was there: (100 + 3 + 2) + (1 + 5 + 2).
        store.quarantine_max_bytes = 113
        newest = await store.quarantine(QuarantineEntry("hub", "x", b"]", parse_ts("2026-11-20T09:00:02Z")))
        assert [r.id for r in await store.list_quarantine()] == [newest, rows[0].id]
    finally:
        await store.close()

"""The SQLite store's hot queries use their indexes: no sort of a subscriber's whole backlog per claim, no scan
of every delivery for the per-second gauges. A plan regression here turns into a replay that crawls."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from relay.store import create_store
from relay.store.sqlite import Q

# query → what its plan must not contain
HOT_QUERIES = {
    "claim_due": ("TEMP B-TREE", "SCAN d"),
    "claim_due_per_key": ("TEMP B-TREE", "SCAN d", "deliveries_state"),
    "delivery_counts": ("SCAN deliveries",),
    "next_due_at": ("SCAN deliveries", "deliveries_state"),
    "oldest_pending": ("SCAN deliveries", "TEMP B-TREE"),
    "prune_events": ("SCAN e",),
    "future_schedule": ("SCAN deliveries",),
    "quarantine_oldest": ("SCAN quarantine", "TEMP B-TREE"),
    "prune_quarantine": ("SCAN quarantine", "TEMP B-TREE"),
}


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    store = create_store(f"sqlite://{tmp_path / 'plans.db'}")
    await store.open()
    await store.close()
    return tmp_path / "plans.db"


@pytest.mark.parametrize("name", sorted(HOT_QUERIES))
async def test_hot_query_plan_uses_an_index(db: Path, name: str) -> None:
    sql = "\n".join(line for line in Q[name].splitlines() if not line.lstrip().startswith("--")).strip().rstrip(";")
    params = {p: "[1]" if p == "ids" else "1" for p in re.findall(r":(\w+)", sql)}
    with sqlite3.connect(db) as conn:
        plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    for forbidden in HOT_QUERIES[name]:
        assert forbidden not in plan, f"{name}: {plan}"

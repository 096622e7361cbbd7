"""What-if changes to the relay, measured before anyone makes them (`--experiment NAME[,NAME…]`).

Store changes are applied to each store file before `relay serve` opens it: SQLite uses any index (or
statistics) present in the file, so a change proposed for a migration can be tried without touching
`relay/`. `uvloop` runs the relay processes with uvloop importable (`relay serve` uses it when it is):
install it outside the project's environment and pass the directory, e.g.

    .venv/bin/pip install --target /tmp/bench-uvloop uvloop
    .venv/bin/python -m bench.run --only replay --experiment uvloop --relay-pythonpath /tmp/bench-uvloop

Experiments are off by default; a run with any writes `bench/results/experiment-NAMES.json`, never the
published report.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from bench.common import child_env

STORE_CHANGES: dict[str, tuple[str, str]] = {
    "claim-index": (
        "Index the claim query's access path: pending deliveries of one subscriber in due order, so a claim "
        "reads `limit` index entries instead of sorting every pending delivery of the subscriber.",
        "CREATE INDEX IF NOT EXISTS bench_deliveries_claim ON deliveries (subscriber, next_attempt_at) "
        "WHERE state = 'pending'",
    ),
    "analyze": (
        "Give the query planner statistics (what `PRAGMA optimize` or a one-off `ANALYZE` after migrations "
        "would do): with them SQLite walks `deliveries_due` for claims and `deliveries_key` for the per-key check.",
        "ANALYZE",
    ),
}
RUNTIME_CHANGES: dict[str, str] = {
    "uvloop": "Run relay serve and the relay CLI with uvloop importable (the `uvloop` extra).",
}
NAMES = (*STORE_CHANGES, *RUNTIME_CHANGES)


def parse(value: str | None) -> list[str]:
    """`a,b` → ["a", "b"]; raises ValueError for an unknown name."""
    names = [n.strip() for n in (value or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ValueError(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    return names


def store_changes(value: str | None) -> list[str]:
    return [n for n in parse(value) if n in STORE_CHANGES]


def apply(name: str, db_path: Path) -> None:
    """Apply store change `name` to a store file that no process has open for writing."""
    _, sql = STORE_CHANGES[name]
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.executescript(sql)
    finally:
        conn.close()


def check_uvloop(pythonpath: str | None) -> str | None:
    """The uvloop version relay processes will import with `pythonpath`, or None when they cannot."""
    probe = subprocess.run(
        [sys.executable, "-c", "import uvloop; print(uvloop.__version__)"],
        env=child_env(pythonpath),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None

"""bench: CPU per event (per relay instance and for the database server), which server processes count for a run's
database, and the "PostgreSQL: 1 and 2 instances" table of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.common import per_event_cost, write_relay_config
from bench.pgserver import cpu_between, process_title, serves_database
from bench.report import instance_change, per_instance_text, render, store_rows
from bench.scenarios import cost_per_event


def test_per_event_cost_per_instance_and_together() -> None:
    cost = per_event_cost([2.0, 3.0], [10_000, 10_000])
    assert [i["us_per_event"] for i in cost["instances"]] == [200.0, 300.0]
    # together: all CPU over all events, i.e. the instances weighted by the events each handled
    assert cost["us_per_event"] == 250.0
    assert (cost["cpu_s"], cost["events"]) == (5.0, 20_000)


def test_per_event_cost_without_events() -> None:
    cost = per_event_cost([0.5, 1.0], [0, 4_000])
    assert cost["instances"][0]["us_per_event"] is None
    assert cost["instances"][1]["us_per_event"] == 250.0
    assert cost["us_per_event"] == 375.0
    assert per_event_cost([0.1], [0])["us_per_event"] is None
    with pytest.raises(ValueError, match="one CPU figure per event count"):
        per_event_cost([1.0], [1, 2])


def test_cost_per_event_adds_the_database_server() -> None:
    window = {"wall_s": 20.0, "relay_cpu_s": [4.0, 4.0], "db_cpu_s": 2.0}
    cost = cost_per_event(window, [20_000, 20_000])
    assert cost["relay"]["us_per_event"] == 200.0
    assert cost["db_server"] == {"cpu_s": 2.0, "us_per_event": 50.0}
    assert cost["window_s"] == 20.0
    assert cost_per_event({"wall_s": 1.0, "relay_cpu_s": [1.0], "db_cpu_s": None}, [100])["db_server"] is None


@pytest.mark.parametrize(
    ("cmdline", "title"),
    [
        (b"postgres: 15/main: checkpointer \0\0\0", "checkpointer"),
        (
            b"postgres: 15/main: postgres relay_bench_1_ab 127.0.0.1(44478) idle\0\0",
            "postgres relay_bench_1_ab 127.0.0.1(44478) idle",
        ),
        (b"postgres: walwriter ", "walwriter"),
        (b"postgres: relay app [local] idle", "relay app [local] idle"),
        (
            b"/usr/lib/postgresql/15/bin/postgres\0-D\0/var/lib/postgresql/15/main\0",
            "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main",
        ),
    ],
)
def test_process_title(cmdline: bytes, title: str) -> None:
    assert process_title(cmdline) == title


@pytest.mark.parametrize(
    ("title", "counts"),
    [
        ("postgres relay_bench_1_ab 127.0.0.1(44478) idle", True),
        ("postgres relay_bench_1_ab 127.0.0.1(44478) INSERT", True),
        ("relay relay_bench_1_ab [local] idle in transaction", True),
        ("postgres relay_test_99_cd 127.0.0.1(50000) idle", False),  # a test suite's database: other work
        ("postgres postgres 127.0.0.1(50001) SELECT", False),
        ("checkpointer", True),
        ("background writer", True),
        ("walwriter", True),
        ("logical replication launcher", True),
        ("autovacuum launcher", True),
        ("autovacuum worker relay_bench_1_ab", True),
        ("autovacuum worker relay_test_99_cd", False),
    ],
)
def test_which_server_processes_serve_the_database(title: str, counts: bool) -> None:
    assert serves_database(title, "relay_bench_1_ab") is counts


def test_cpu_between_counts_new_processes_from_zero_and_forgets_gone_ones() -> None:
    before = {10: 5.0, 11: 1.0, 12: 2.0}
    after = {10: 6.5, 12: 2.0, 13: 0.25}  # 11 exited, 13 started
    assert cpu_between(before, after) == 1.75


def test_relay_config_on_postgresql(tmp_path: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/relay_bench_1_ab"
    path, base_url = write_relay_config(tmp_path, store_url=url)
    config = yaml.safe_load(path.read_text())
    assert config["store"] == {"url": url}  # synchronous is an SQLite setting
    assert base_url == f"http://{config['server']['listen']}"
    path, _ = write_relay_config(tmp_path, synchronous="NORMAL")
    assert yaml.safe_load(path.read_text())["store"] == {
        "url": f"sqlite://{tmp_path / 'relay.db'}",
        "synchronous": "NORMAL",
    }


def test_per_instance_text() -> None:
    assert per_instance_text(None) == "–"
    assert per_instance_text(per_event_cost([1.0], [4_000])) == "250"
    assert per_instance_text(per_event_cost([2.0, 3.0], [10_000, 10_000])) == "250 (200 / 300)"


def _cost(relay_cpu_s: list[float], events: list[int], db_cpu_s: float | None = None) -> dict[str, Any]:
    return cost_per_event({"wall_s": 20.0, "relay_cpu_s": relay_cpu_s, "db_cpu_s": db_cpu_s}, events)


def _results() -> dict[str, Any]:
    def ingest(rate: float, runs: list[float], cost: dict[str, Any]) -> dict[str, Any]:
        return {"accepted_per_s": rate, "runs": runs, "cpu_per_event": cost}

    def fanout(rate: float, runs: list[float], cost: dict[str, Any]) -> dict[str, Any]:
        return {"deliveries_per_s": rate, "runs": runs, "cpu_per_event": cost}

    pg = {
        "server_version": "15.20",
        "synchronous_commit": "on",
        "fsync": "on",
        "shared_buffers": "128MB",
        "autovacuum": "off",
    }
    return {
        "baseline_a": {"requests_per_s": 10_000.0, "runs": [10_000.0, 8_000.0, 12_000.0]},
        "baseline_b": {"posts_per_s": 10_000.0, "runs": [10_000.0, 10_000.0, 10_000.0]},
        "ingest_full": {
            **ingest(7_000.0, [7_000.0, 6_000.0, 8_400.0], _cost([2.0], [16_000])),
            # what the SQLite sections of the report read
            "synchronous": "FULL",
            "requests_per_s": 7_700.0,
            "latency_ms": {"count": 0},
        },
        "fanout": {
            **fanout(4_000.0, [4_000.0, 5_000.0, 3_000.0], _cost([12.0], [60_000])),
            "events": 20_000,
            "subscribers": 3,
            "deliveries_expected": 60_000,
            "deliveries_received": 60_000,
            "unique_received": 60_000,
            "seconds": 15.0,
        },
        "pg_ingest_1": {
            **ingest(3_000.0, [3_000.0, 2_400.0, 3_000.0], _cost([3.0], [12_000], 1.2)),
            "postgres": pg,
            "placement": {"relays": [0], "load": [1], "postgres": "0-1"},
            "accepted_total": 60_000,
            "stored_matches_accepted": True,
            "latency_ms": {"count": 3, "p50": 20.0, "p95": 30.0, "p99": 40.0, "max": 50.0},
            "foreign_cpu_pct": 3.0,
        },
        "pg_ingest_2": ingest(2_500.0, [2_500.0, 2_500.0, 2_500.0], _cost([2.0, 3.0], [10_000, 10_000], 2.0)),
        "pg_fanout_1": {"error": "RuntimeError: receivers incomplete after 240.0s"},
    }


def test_store_rows() -> None:
    rows = store_rows(_results())
    assert rows[0] == ["SQLite, 1 instance", "7,000", "70%", "4,000", "40%", "125", "200", "–", "125 / 200"]
    # ratios: the median of the paired rounds (3,000/10,000, 2,400/8,000, 3,000/12,000 → 30 %, 30 %, 25 %)
    assert rows[1][:6] == ["PostgreSQL, 1 instance", "3,000", "30%", "–", "–", "250"]
    assert rows[1][7:] == ["100 / –", "350 / –"]  # the fan-out failed: its cells are empty
    assert rows[2][5] == "250 (200 / 300)"
    assert rows[2][7:] == ["100 / –", "350 / –"]
    assert len(rows) == 3


def test_a_row_with_only_errors_says_so() -> None:
    results = {"pg_ingest_2": {"error": "OSError: connection refused"}, "pg_fanout_2": {"error": "boom"}}
    (row,) = store_rows(results)
    assert row[0] == "PostgreSQL, 2 instances"
    assert row[1] == "error: pg_ingest_2: OSError: connection refused; pg_fanout_2: boom"


def test_the_postgresql_section() -> None:
    doc: dict[str, Any] = {"machine": {}, "settings": {"fanout_events": 20_000}, "results": _results()}
    text = render(doc)
    section = text[text.index("## PostgreSQL: 1 and 2 instances") : text.index("## How it is measured")]
    assert "PostgreSQL 15.20 on this machine" in section
    assert "**On 2 cores, 2 instances cannot scale raw throughput**" in section
    assert "The per-event cost is the figure that carries over" in section
    assert "the relays on CPU 0 (with 2 instances both share it)" in section
    assert "PostgreSQL on CPUs 0-1 (not pinned" in section
    assert "| SQLite, 1 instance | 7,000 | 70% | 4,000 | 40% | 125 | 200 | – | 125 / 200 |" in section
    assert (
        "| `pg_ingest_1` | 60,000 events accepted in all | 20.0 / 30.0 / 40.0 / 50.0 | stored = accepted: yes |"
        in section
    )
    assert "20,000 events" in section


def test_no_postgresql_section_without_its_results() -> None:
    doc: dict[str, Any] = {"machine": {}, "settings": {}, "results": {"ingest_full": _results()["ingest_full"]}}
    assert "## PostgreSQL: 1 and 2 instances" not in render(doc)


def test_instance_change() -> None:
    results = _results()
    results["pg_fanout_1"] = {"deliveries_per_s": 1_000.0, "cpu_per_event": _cost([4.0], [10_000])}
    results["pg_fanout_2"] = {"deliveries_per_s": 1_250.0, "cpu_per_event": _cost([2.0, 2.2], [5_000, 5_000])}
    assert instance_change(results) == (
        " Here, 1 → 2 instances: ingest 3,000 → 2,500 accepted/s (-17%), relay CPU per event 250 → 250 µs (+0%); "
        "fan-out 1,000 → 1,250 deliveries/s (+25%), relay CPU per event 400 → 420 µs (+5%)."
    )
    assert instance_change({"pg_ingest_1": results["pg_ingest_1"]}) == ""

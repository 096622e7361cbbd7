"""`make bench`: run the measurements, write bench/results/latest.json and docs/benchmarks.md.

    python -m bench.run                          # everything (about 12 minutes)
    BENCH_QUICK=1 python -m bench.run            # everything, scaled down to about a minute
    python -m bench.run --only ingest,latency    # some; merged into the existing results file
    python -m bench.run --only ingest --profile  # with py-spy profiles of relay serve (figures perturbed)

Scenario names for --only: baseline_a, ingest_full, ingest_normal, baseline_b, baseline_b1, fanout, fanout_per_key,
latency_1, latency_3, rss_idle, replay, pg_ingest_1, pg_ingest_2, pg_fanout_1, pg_fanout_2; groups: baselines,
ingest, latency, delivery, rss (rss_idle, replay), postgres (the pg_* scenarios: 1 and 2 relay instances on one
throw-away database of the local PostgreSQL server, postgresql://postgres@127.0.0.1:5432 or BENCH_PG_SERVER).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import calibrate, experiments
from bench.common import (
    REPO,
    RESULTS_DIR,
    Cores,
    busiest_foreign,
    foreign_cpu_pct,
    load_snapshot,
    machine_info,
    rounded,
)
from bench.report import kept_analysis, kept_lookups, render
from bench.scenarios import Bench, Settings
from bench.targets import verdicts

DOCS_PATH = REPO / "docs" / "benchmarks.md"
SCENARIOS: tuple[str, ...] = (
    "baseline_a",
    "ingest_full",
    "ingest_normal",
    "baseline_b",
    "baseline_b1",
    "fanout",
    "fanout_per_key",
    "latency_1",
    "latency_3",
    "rss_idle",
    "replay",
    "pg_ingest_1",
    "pg_ingest_2",
    "pg_fanout_1",
    "pg_fanout_2",
)
GROUPS: dict[str, tuple[str, ...]] = {
    "baselines": ("baseline_a", "baseline_b", "baseline_b1"),
    "ingest": ("ingest_full", "ingest_normal"),
    "latency": ("latency_1", "latency_3"),
    "delivery": ("baseline_b", "baseline_b1", "fanout", "fanout_per_key"),
    "rss": ("rss_idle", "replay"),
    "postgres": ("pg_ingest_1", "pg_ingest_2", "pg_fanout_1", "pg_fanout_2"),
}
# Throughput figures vary run to run on a shared machine: these run `Settings.repeats` times, interleaved.
REPEATED: dict[str, str] = {
    "baseline_a": "requests_per_s",
    "ingest_full": "accepted_per_s",
    "ingest_normal": "accepted_per_s",
    "baseline_b": "posts_per_s",
    "baseline_b1": "posts_per_s",
    "fanout": "deliveries_per_s",
    "pg_ingest_1": "accepted_per_s",
    "pg_ingest_2": "accepted_per_s",
    "pg_fanout_1": "deliveries_per_s",
    "pg_fanout_2": "deliveries_per_s",
}
# Other processes using more than this (% of one core) make a run unrepresentative.
QUIET_PCT = 15.0
# Generous per-scenario limits; a scenario that overruns is recorded as an error and the run continues.
LIMIT_S = {"full": 420.0, "quick": 120.0}
RUN_LIMIT_S = {"full": 40 * 60.0, "quick": 8 * 60.0}


def select(only: str | None) -> list[str]:
    if not only:
        return list(SCENARIOS)
    wanted: set[str] = set()
    for name in (n.strip() for n in only.split(",") if n.strip()):
        if name in GROUPS:
            wanted.update(GROUPS[name])
        elif name in SCENARIOS:
            wanted.add(name)
        else:
            raise SystemExit(f"unknown scenario {name!r}; choose from {', '.join((*SCENARIOS, *GROUPS))}")
    return [s for s in SCENARIOS if s in wanted]


def scenario(bench: Bench, name: str) -> Callable[[], Awaitable[dict[str, Any]]]:
    table: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
        "baseline_a": bench.baseline_a,
        "ingest_full": lambda: bench.ingest("FULL"),
        "ingest_normal": lambda: bench.ingest("NORMAL"),
        "baseline_b": lambda: bench.baseline_b(bench.settings.fanout_subscribers),
        "baseline_b1": lambda: bench.baseline_b(1),
        "fanout": lambda: bench.fanout(bench.settings.fanout_subscribers, bench.settings.fanout_events),
        "fanout_per_key": lambda: bench.fanout(1, bench.settings.per_key_events, "per-key"),
        "latency_1": lambda: bench.latency(1),
        "latency_3": lambda: bench.latency(3),
        "rss_idle": bench.rss_idle,
        "replay": bench.replay,
        "pg_ingest_1": lambda: bench.ingest(instances=1, postgres=True),
        "pg_ingest_2": lambda: bench.ingest(instances=2, postgres=True),
        "pg_fanout_1": lambda: bench.fanout(
            bench.settings.fanout_subscribers, bench.settings.fanout_events, instances=1, postgres=True
        ),
        "pg_fanout_2": lambda: bench.fanout(
            bench.settings.fanout_subscribers, bench.settings.fanout_events, instances=2, postgres=True
        ),
    }
    return table[name]


def headline(name: str, result: dict[str, Any]) -> str:
    """One line per scenario for the console."""
    if "error" in result:
        return f"ERROR {result['error'][:300]}"
    picks = {
        "baseline_a": ("requests_per_s", "req/s"),
        "ingest_full": ("accepted_per_s", "accepted/s"),
        "ingest_normal": ("accepted_per_s", "accepted/s"),
        "baseline_b": ("posts_per_s", "posts/s"),
        "baseline_b1": ("posts_per_s", "posts/s"),
        "fanout": ("deliveries_per_s", "deliveries/s"),
        "fanout_per_key": ("deliveries_per_s", "deliveries/s"),
        "replay": ("deliveries_per_s", "deliveries/s"),
        "rss_idle": ("rss_kib", "KiB RSS"),
        "pg_ingest_1": ("accepted_per_s", "accepted/s"),
        "pg_ingest_2": ("accepted_per_s", "accepted/s"),
        "pg_fanout_1": ("deliveries_per_s", "deliveries/s"),
        "pg_fanout_2": ("deliveries_per_s", "deliveries/s"),
    }
    if name in picks:
        key, unit = picks[name]
        cost = (result.get("cpu_per_event") or {}).get("relay") or {}
        per_event = f", relay CPU {cost['us_per_event']:,.0f} µs/event" if cost.get("us_per_event") else ""
        return f"{result.get(key, 0):,.0f} {unit}{per_event}"
    if name.startswith("latency"):
        p = result["ack_to_receipt_ms"]
        return f"p50 {p.get('p50', 0):.1f} ms, p99 {p.get('p99', 0):.1f} ms ({p.get('count', 0)} deliveries)"
    return ""


def plan(names: list[str], repeats: int) -> list[str]:
    """Rounds: every selected scenario in the first, only the repeated ones in later rounds."""
    order = list(names)
    for _ in range(1, repeats):
        order.extend(n for n in names if n in REPEATED)
    return order


def median_run(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median figure, with every run's figure beside it."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[-1]
    key = REPEATED[name]
    ordered = sorted(good, key=lambda r: float(r.get(key) or 0))
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["runs"] = [r.get(key) for r in runs]
    chosen["runs_foreign_cpu_pct"] = [r.get("foreign_cpu_pct") for r in runs]
    return chosen


async def measure_foreign(seconds: float) -> float:
    before = load_snapshot()
    await asyncio.sleep(seconds)
    return foreign_cpu_pct(before, load_snapshot())


async def wait_for_quiet(limit_s: float) -> dict[str, Any]:
    """Wait (at most `limit_s`) until other processes use under QUIET_PCT of a core; report what was seen."""
    waited = 0.0
    foreign = await measure_foreign(2.0)
    busiest: list[str] = []
    if foreign > QUIET_PCT:
        busiest = await asyncio.to_thread(busiest_foreign)
        log(f"other processes use {foreign:.0f} % of a core: {'; '.join(busiest) or '?'}")
        if limit_s > 0:
            log(f"waiting up to {limit_s:.0f} s for the machine to quieten (BENCH_QUIET_WAIT_S)")
    while foreign > QUIET_PCT and waited < limit_s:
        await asyncio.sleep(8.0)
        foreign = await measure_foreign(2.0)
        waited += 10.0
    if foreign > QUIET_PCT:
        log("WARNING: the machine is busy with other work; the figures will be low and noisy")
    return {"foreign_cpu_at_start_pct": foreign, "waited_for_quiet_s": waited, "busy_processes": busiest}


async def run_all(names: list[str], settings: Settings, cores: Cores, tmp_root: Path) -> tuple[dict[str, Any], Any]:
    bench = Bench(settings, cores, tmp_root)
    mode = "quick" if settings.quick else "full"
    default_wait = "0" if settings.quick else "300"
    environment = await wait_for_quiet(float(os.environ.get("BENCH_QUIET_WAIT_S", default_wait)))
    capacity = {**await calibrate.capacity(cores, 1.0 if settings.quick else 2.0), **environment}
    log(f"CPU capacity: two busy processes get {capacity['two_busy_processes_core_equivalents']} cores' worth")
    runs: dict[str, list[dict[str, Any]]] = {}
    began = time.monotonic()
    for name in plan(names, settings.repeats):
        if time.monotonic() - began > RUN_LIMIT_S[mode]:
            runs.setdefault(name, []).append({"error": "skipped: the run's time limit was reached"})
            continue
        log(f"{name} …")
        started = time.monotonic()
        load_before = load_snapshot()
        try:
            result = await asyncio.wait_for(scenario(bench, name)(), LIMIT_S[mode])
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            result = {"error": detail or type(exc).__name__}
            log(traceback.format_exc())
        result["measured_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        result["quick"] = settings.quick
        result["elapsed_s"] = time.monotonic() - started
        # PostgreSQL scenarios measure it themselves over their window, counting the database server as theirs.
        result.setdefault("foreign_cpu_pct", foreign_cpu_pct(load_before, load_snapshot()))
        runs.setdefault(name, []).append(rounded(result))
        busy = f", other processes {result['foreign_cpu_pct']:.0f} % of a core" if result["foreign_cpu_pct"] > 5 else ""
        log(f"{name}: {headline(name, result)} ({result['elapsed_s']:.0f} s{busy})")
    results = {name: median_run(name, r) if name in REPEATED else r[-1] for name, r in runs.items()}
    return results, capacity


def log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated scenarios or groups (default: all)")
    parser.add_argument("--quick", action="store_true", help="scaled-down run (also BENCH_QUICK=1)")
    parser.add_argument("--profile", action="store_true", help="py-spy profiles of relay serve (perturbs figures)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the two sides to separate cores")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temporary relay directories")
    parser.add_argument(
        "--experiment",
        help=f"what-ifs, comma-separated ({', '.join(experiments.NAMES)}); see bench/experiments.py. "
        "Results: bench/results/experiment-NAMES.json",
    )
    parser.add_argument("--relay-pythonpath", help="prepended to PYTHONPATH of relay processes (for uvloop)")
    parser.add_argument("--docs", type=Path, default=None, help="also write the Markdown report here")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the temporary stores go")
    args = parser.parse_args(argv)

    try:
        chosen = experiments.parse(args.experiment)
    except ValueError as exc:
        parser.error(str(exc))
    if "uvloop" in chosen and experiments.check_uvloop(args.relay_pythonpath) is None:
        parser.error("--experiment uvloop: relay processes cannot import uvloop; see bench/experiments.py")
    quick = args.quick or os.environ.get("BENCH_QUICK", "") not in ("", "0")
    over = {
        "profile": args.profile,
        "keep_temp": args.keep_temp,
        "experiment": ",".join(chosen) or None,
        "relay_pythonpath": args.relay_pythonpath,
    }
    settings = Settings.quick_settings(**over) if quick else Settings(**over)
    names = select(args.only)
    cores = Cores.choose(pin=not args.no_pin)
    tmp_root = args.tmp_dir or Path(tempfile.gettempdir())
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = "profile" if args.profile else ("latest-quick" if quick else "latest")
    if chosen:
        stem = f"experiment-{'+'.join(chosen)}" + ("-profile" if args.profile else "")
    json_path = RESULTS_DIR / f"{stem}.json"

    log(f"{'quick' if quick else 'full'} run of {', '.join(names)}; {cores.describe()}")
    results, capacity = asyncio.run(run_all(names, settings, cores, tmp_root))

    previous: dict[str, Any] = {}
    if args.only and json_path.exists():
        previous = orjson.loads(json_path.read_bytes()).get("results", {})
    merged = {**previous, **results}
    doc: dict[str, Any] = {
        "machine": {
            **machine_info(tmp_root, cores),
            "cpu_capacity": capacity,
            **({"relay_uvloop": experiments.check_uvloop(args.relay_pythonpath)} if "uvloop" in chosen else {}),
        },
        "settings": asdict(settings),
        "command": " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "results": merged,
        "verdicts": [v.as_dict() for v in verdicts(merged)],
    }
    json_path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    log(f"wrote {json_path.relative_to(REPO)}")

    docs_targets = [RESULTS_DIR / f"{stem}.md"]
    if args.docs is not None:
        docs_targets.append(args.docs)
    elif not quick and not args.only and not args.profile and not chosen:
        docs_targets.append(DOCS_PATH)
    for path in docs_targets:
        path.write_text(render(doc, kept_analysis(DOCS_PATH), kept_lookups(DOCS_PATH)))
        log(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    for v in verdicts(merged):
        mark = "-" if v.met is None else ("met" if v.met else "MISSED")
        log(f"  {v.name}: {v.measured} [{mark}]")
    failed = [n for n, r in results.items() if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Optional sampling profiles of `relay serve` with py-spy (`--profile`), summarised per thread.

py-spy is not a dependency: `.venv/bin/pip install py-spy` to use it. Idle samples are left out, so a
thread's share of samples over the wall time is roughly its CPU use; the top lists say where that went.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, Children

RATE_HZ = 100
_THREAD_RE = re.compile(r"^thread \((\d+)\): (.*)$")


def py_spy() -> str | None:
    """The py-spy executable next to this Python, or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(children: Children, pid: int, seconds: float, name: str) -> dict[str, Any]:
    """Sample `pid` for `seconds` into bench/results/profiles/<name>.txt and summarise it."""
    exe = py_spy()
    if exe is None:
        return {"error": "py-spy not installed (.venv/bin/pip install py-spy)"}
    out_dir = RESULTS_DIR / "profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"{name}.txt"
    seconds = max(1, round(seconds))
    child = await children.spawn(
        "py-spy",
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            str(RATE_HZ),
            "--format",
            "raw",
            "--threads",
            "--function",
            "--output",
            str(raw),
        ],
        log_path=out_dir / f"{name}.log",
    )
    code = await child.process.wait()
    if code != 0 or not raw.exists():
        return {"error": f"py-spy exited with {code}: {child.log_tail(500)}"}
    return summarize(raw, pid, seconds)


def _short(frame: str) -> str:
    """`handle_push (relay/ingest/json_push.py:45)` → `relay/ingest/json_push.py:handle_push`."""
    func, _, where = frame.rpartition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{file}:{func}" if func else frame


# Frames every sample of a thread passes through: they say nothing about where the time goes.
_GENERIC = (
    "<frozen runpy>",
    "click/",
    "asyncio/runners.py",
    "asyncio/base_events.py:BaseEventLoop.run_",
    "asyncio/base_events.py:BaseEventLoop._run_once",
    "asyncio/events.py:Handle._run",
    "threading.py",
    "relay/cli.py",
    "aiosqlite/core.py:_connection_worker_thread",
)


def _informative(func: str) -> bool:
    return not func.startswith(_GENERIC)


def _module(frame: str) -> str:
    return _short(frame).rsplit(":", 1)[0]


def summarize(raw: Path, pid: int, seconds: float, top: int = 25) -> dict[str, Any]:
    """Per thread: share of wall time busy, and the functions with the most self and inclusive samples."""
    threads: dict[str, dict[str, Any]] = {}
    self_counts: dict[str, Counter[str]] = defaultdict(Counter)
    incl_counts: dict[str, Counter[str]] = defaultdict(Counter)
    module_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        head, _, rest = stack.partition(";")
        match = _THREAD_RE.match(head)
        tid = match.group(1) if match else "?"
        key = "main (event loop)" if tid == str(pid) else "other threads (aiosqlite, executor)"
        entry = threads.setdefault(key, {"samples": 0, "tids": set()})
        entry["samples"] += count
        entry["tids"].add(tid)
        frames = [f for f in rest.split(";") if f]
        if not frames:
            continue
        self_counts[key][_short(frames[-1])] += count
        module_counts[key][_module(frames[-1])] += count
        for func in {_short(f) for f in frames}:
            if _informative(func):
                incl_counts[key][func] += count
    wall_samples = RATE_HZ * seconds
    out: dict[str, Any] = {"seconds": seconds, "rate_hz": RATE_HZ, "raw": str(raw), "threads": {}}
    for key, entry in threads.items():
        total = entry["samples"]

        def share(counter: Counter[str], total: int = total) -> list[list[Any]]:
            return [[name, round(n / total * 100, 1)] for name, n in counter.most_common(top)]

        out["threads"][key] = {
            "thread_count": len(entry["tids"]),
            "busy_pct_of_wall": round(total / wall_samples * 100, 1),
            "top_self_pct": share(self_counts[key]),
            "top_inclusive_pct": share(incl_counts[key]),
            "self_by_module_pct": share(module_counts[key]),
        }
    return out

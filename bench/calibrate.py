"""How much CPU the machine really gives two busy processes at once (virtual machines often give less than 2×).

    python -m bench.calibrate SECONDS   # spins for SECONDS, prints {"loops": n, "cpu_s": t}

`capacity()` runs one spinner alone, then one per core together, and reports how many single-core
equivalents the pair achieved: 2.0 on two real cores, less where vCPUs share host cores or are capped.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson

from bench.common import Children, Cores, python_module


def spin(seconds: float) -> dict[str, float]:
    deadline = time.monotonic() + seconds
    loops = 0
    while time.monotonic() < deadline:
        for _ in range(10_000):
            pass
        loops += 1
    return {"loops": loops, "cpu_s": time.process_time()}


async def _spinners(children: Children, cpus: list[frozenset[int] | None], seconds: float) -> list[dict[str, Any]]:
    procs = [
        await children.spawn("spin", python_module("bench.calibrate", str(seconds)), cpus=c, stdout_pipe=True)
        for c in cpus
    ]
    return [await p.read_json_line(seconds + 30) for p in procs]


async def capacity(cores: Cores, seconds: float = 2.0) -> dict[str, Any]:
    """Single-core equivalents delivered to two concurrent CPU-bound processes on the two benchmark cores."""
    async with Children() as children:
        (alone,) = await _spinners(children, [cores.server], seconds)
        both = await _spinners(children, [cores.server, cores.client], seconds)
    single = alone["loops"] or 1
    return {
        "single_core_loops_per_s": single / seconds,
        "two_busy_processes_core_equivalents": round(sum(b["loops"] for b in both) / single, 2),
        "cpu_time_seen_per_busy_process_pct": round(sum(b["cpu_s"] for b in both) / len(both) / seconds * 100, 1),
    }


def main() -> None:
    sys.stdout.write(orjson.dumps(spin(float(sys.argv[1]))).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""What the benchmark's processes share: payloads, /proc readings, child processes, relay configs, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import platform
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import yaml

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
TOKEN = "bench-token-0123456789abcdef"  # noqa: S105 - a fake token for a throwaway local relay
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the test suite's fake secret
PUSH_PATH = "/v1/sources/hub/events"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# A SyncSalesOrder as the JSON push source receives it (the same shape as tests/helpers.py sample_event);
# `%s` slots: event id, order number. Bytes formatting keeps the generator's per-request cost tiny.
_EVENT_TEMPLATE = (
    orjson.dumps(
        {
            "eventId": "@ID@",
            "documentType": "SyncSalesOrder",
            "tenantId": "HALLORAN",
            "timestamp": "2026-11-20T09:41:56Z",
            "data": {
                "orderNumber": "@KEY@",
                "customerNumber": "C1001",
                "orderDate": "2026-11-20",
                "totalAmount": 120.5,
            },
        }
    )
    .replace(b"%", b"%%")
    .replace(b"@ID@", b"%s")
    .replace(b"@KEY@", b"%s")
)
ORDER_KEYS = 10_000


def event_body(event_id: str, index: int) -> bytes:
    """A valid `order/synced` event; `index` spreads the events over `ORDER_KEYS` order numbers."""
    return _EVENT_TEMPLATE % (event_id.encode(), f"SO-{index % ORDER_KEYS}".encode())


# ---------------------------------------------------------------------------------------- statistics


def percentiles(values: Sequence[float], points: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles plus max and count; empty input gives only the count."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    out: dict[str, float] = {"count": len(ordered)}
    for p in points:
        rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
        out[f"p{p:g}"] = ordered[rank - 1]
    out["max"] = ordered[-1]
    out["mean"] = sum(ordered) / len(ordered)
    return out


def per_event_cost(cpu_s: Sequence[float], events: Sequence[float]) -> dict[str, Any]:
    """CPU µs per event: for each process (its CPU seconds over the events it handled) and for all together.

    `cpu_s[i]` and `events[i]` belong to process i (a relay instance) over the same window; the overall figure
    is the sum of CPU over the sum of events, i.e. the instances' figures weighted by the events each handled.
    A process that handled no events gets None.
    """
    if len(cpu_s) != len(events):
        raise ValueError("one CPU figure per event count")
    each = [
        {"cpu_s": c, "events": n, "us_per_event": c / n * 1e6 if n > 0 else None}
        for c, n in zip(cpu_s, events, strict=True)
    ]
    total_events = sum(events)
    return {
        "cpu_s": sum(cpu_s),
        "events": total_events,
        "us_per_event": sum(cpu_s) / total_events * 1e6 if total_events > 0 else None,
        "instances": each,
    }


def rounded(value: Any, digits: int = 2) -> Any:
    """Round floats inside nested dicts/lists for readable JSON."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


# ---------------------------------------------------------------------------------------- /proc


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU seconds of one process at a monotonic instant: its main thread and all other threads."""

    at: float
    main_s: float
    other_s: float
    threads: int


def _thread_cpu_s(stat_path: Path) -> float:
    text = stat_path.read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def cpu_snapshot(pid: int) -> CpuSnapshot:
    """Per-thread CPU time from /proc/PID/task (the main thread's id is the process id)."""
    main = other = 0.0
    count = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            seconds = _thread_cpu_s(task / "stat")
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # a thread that ended between listing and reading
        count += 1
        if task.name == str(pid):
            main = seconds
        else:
            other += seconds
    return CpuSnapshot(time.monotonic(), main, other, count)


def cpu_seconds(before: CpuSnapshot, after: CpuSnapshot) -> float:
    """CPU seconds (utime + stime, every thread) a process used between two snapshots."""
    return (after.main_s + after.other_s) - (before.main_s + before.other_s)


def cpu_usage(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """Percent of one core used between two snapshots: main thread, other threads, total."""
    wall = max(after.at - before.at, 1e-9)
    main = (after.main_s - before.main_s) / wall * 100
    other = (after.other_s - before.other_s) / wall * 100
    return {"main_thread_pct": main, "other_threads_pct": other, "total_pct": main + other, "threads": after.threads}


@dataclass(frozen=True, slots=True)
class LoadSnapshot:
    """All CPU time spent on the machine, and the part spent by this benchmark, at one instant."""

    at: float
    busy_s: float  # every CPU, every process and interrupt (/proc/stat without idle and iowait)
    ours_live: dict[int, float]  # this process and its children that are running
    ours_done_s: float  # children already waited for (their whole lifetime)


def _process_cpu_s(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def load_snapshot() -> LoadSnapshot:
    import resource

    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in cpu[:8])
    me = os.getpid()
    ours: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        info = _process_cpu_s(int(entry.name))
        if info is not None and (int(entry.name) == me or info[0] == me):
            ours[int(entry.name)] = info[1]
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    return LoadSnapshot(
        time.monotonic(),
        (user + nice + system + irq + softirq + steal) / CLK_TCK,
        ours,
        done.ru_utime + done.ru_stime,
    )


def foreign_cpu_pct(before: LoadSnapshot, after: LoadSnapshot) -> float:
    """CPU used by everything that is not this benchmark between two snapshots, in % of one core."""
    ours = after.ours_done_s - before.ours_done_s
    for pid, seconds in after.ours_live.items():
        ours += seconds - before.ours_live.get(pid, 0.0)
    for pid, seconds in before.ours_live.items():
        if pid not in after.ours_live:
            ours -= seconds  # ended and waited for: its whole lifetime is already in ours_done_s
    wall = max(after.at - before.at, 1e-9)
    return max(0.0, (after.busy_s - before.busy_s - ours) / wall * 100)


def busiest_foreign(limit: int = 3) -> list[str]:
    """The processes (not this benchmark) with the most CPU time used in the last second, for the report."""
    me = os.getpid()
    first: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _process_cpu_s(int(entry.name))) is not None and info[0] != me:
            first[int(entry.name)] = info[1]
    time.sleep(1.0)
    used: list[tuple[float, int]] = []
    for pid, seconds in first.items():
        info = _process_cpu_s(pid)
        if info is not None and pid != me and info[1] - seconds > 0.05:
            used.append((info[1] - seconds, pid))
    out = []
    for seconds, pid in sorted(used, reverse=True)[:limit]:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        out.append(f"{seconds * 100:.0f} % pid {pid}: {cmd[:120]}")
    return out


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        return 0
    return 0


# ---------------------------------------------------------------------------------------- child processes


def child_env(pythonpath: str | None = None) -> dict[str, str]:
    """The environment for children: no RELAY_* overrides leaking in, `bench` (and `pythonpath`) importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Cores:
    """Which CPU the system under test runs on and which the load side runs on (None: not pinned)."""

    server: frozenset[int] | None
    client: frozenset[int] | None

    @classmethod
    def choose(cls, pin: bool) -> Cores:
        available = sorted(os.sched_getaffinity(0))
        if not pin or len(available) < 2:
            return cls(None, None)
        return cls(frozenset({available[0]}), frozenset({available[1]}))

    def describe(self) -> str:
        if self.server is None or self.client is None:
            return "not pinned"
        return f"relay/server under test on CPU {min(self.server)}, load side on CPU {min(self.client)}"


@dataclass(eq=False)
class Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    async def read_json_line(self, timeout_s: float) -> Any:
        """The next stdout line as JSON (servers announce their ports this way)."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        if not line:
            raise RuntimeError(f"{self.name} exited before announcing itself (code {await self.process.wait()})")
        return orjson.loads(line)


@dataclass(eq=False)
class Children:
    """Starts child processes and guarantees that each one it started is stopped (by pid) on exit."""

    children: list[Child] = field(default_factory=list)

    async def __aenter__(self) -> Children:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for child in reversed(self.children):
            await stop(child)

    async def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpus: frozenset[int] | None = None,
        log_path: Path | None = None,
        stdout_pipe: bool = False,
        pythonpath: str | None = None,
    ) -> Child:
        """Start `argv` with the benchmark's environment, pinned to `cpus` when given.

        stdout goes to a pipe (`stdout_pipe`) or to `log_path`; stderr to `log_path` or is inherited.
        """
        log_file = log_path.open("ab") if log_path is not None else None

        def prepare() -> None:  # runs in the child between fork and exec
            _die_with_parent()
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=REPO,
                env=child_env(pythonpath),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if stdout_pipe else (log_file or asyncio.subprocess.DEVNULL),
                stderr=log_file if log_file is not None else None,
                preexec_fn=prepare,
                limit=64 * 1024 * 1024,
            )
        finally:
            if log_file is not None:
                log_file.close()
        child = Child(name, process, log_path)
        self.children.append(child)
        return child


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the benchmark dies, so no relay outlives a killed run."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


async def stop(child: Child, timeout_s: float = 20.0) -> int | None:
    """SIGTERM, wait, then SIGKILL: only ever the one process this benchmark started."""
    process = child.process
    if process.returncode is not None:
        return process.returncode
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        return await process.wait()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# ---------------------------------------------------------------------------------------- relay configs


def subscriber(name: str, url: str, *, max_in_flight: int = 64, ordering: str = "none") -> dict[str, Any]:
    """A subscriber on a local receiver (loopback needs allow_private_network)."""
    return {
        "name": name,
        "url": url,
        "secrets": [WHSEC],
        "allow_private_network": True,
        "max_in_flight": max_in_flight,
        "ordering": ordering,
        "timeout": "10s",
        "retry": {"schedule": ["1s", "2s", "5s"], "max_age": "1h"},
    }


def write_relay_config(
    directory: Path,
    *,
    synchronous: str = "FULL",
    subscribers: Sequence[dict[str, Any]] = (),
    db_path: Path | None = None,
    store_url: str | None = None,
) -> tuple[Path, str]:
    """A relay.yaml in `directory`: one bearer JSON push source `hub`; returns (path, base URL).

    The store is the SQLite file `db_path` (default: relay.db in `directory`), or `store_url` when given (a
    PostgreSQL URL; `synchronous` is an SQLite setting and is then left out).
    """
    port = free_port()
    store = (
        {"url": store_url}
        if store_url is not None
        else {"url": f"sqlite://{db_path or directory / 'relay.db'}", "synchronous": synchronous}
    )
    config = {
        "store": store,
        "server": {"listen": f"127.0.0.1:{port}"},
        "logging": {"format": "json", "level": "info"},
        "sources": [{"name": "hub", "kind": "json-push", "auth": {"type": "bearer", "tokens": [TOKEN]}}],
        "subscribers": list(subscribers),
    }
    path = directory / "relay.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, f"http://127.0.0.1:{port}"


async def wait_until_ready(child: Child, base_url: str, timeout_s: float = 60.0) -> None:
    """Poll GET /readyz until it answers 200; fail early with the log tail if the relay exits."""
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if child.process.returncode is not None:
                raise RuntimeError(f"{child.name} exited with {child.process.returncode}: {child.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(base_url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{child.name} not ready within {timeout_s}s: {child.log_tail()}")


async def scrape_metrics(base_url: str) -> dict[str, float]:
    """Sums of every sample name in the relay's Prometheus text (labels folded together)."""
    import aiohttp

    totals: dict[str, float] = {}
    async with aiohttp.ClientSession() as session, session.get(base_url + "/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        with contextlib.suppress(ValueError):
            totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def commit_stats(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Group-commit figures between two scrapes: commits, mean batch size, mean commit time."""
    commits = after.get("relay_store_commit_batch_size_count", 0) - before.get("relay_store_commit_batch_size_count", 0)
    writes = after.get("relay_store_commit_batch_size_sum", 0) - before.get("relay_store_commit_batch_size_sum", 0)
    seconds = after.get("relay_store_commit_duration_seconds_sum", 0) - before.get(
        "relay_store_commit_duration_seconds_sum", 0
    )

    def mean_ms(name: str) -> float:
        count = after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)
        total = after.get(f"{name}_sum", 0) - before.get(f"{name}_sum", 0)
        return total / count * 1000 if count else 0.0

    return {
        "ingest_handler_mean_ms": mean_ms("relay_ingest_duration_seconds"),
        "webhook_attempt_mean_ms": mean_ms("relay_webhook_attempt_duration_seconds"),
        "received_to_delivered_mean_ms": mean_ms("relay_webhook_end_to_end_seconds"),
        "commits": commits,
        "mean_writes_per_commit": writes / commits if commits else 0.0,
        "mean_commit_ms": seconds / commits * 1000 if commits else 0.0,
        "commit_busy_pct": 0.0,  # filled by the caller, who knows the window
        "commit_seconds": seconds,
    }


# ---------------------------------------------------------------------------------------- the machine


def _cpu_model() -> str:
    model = family = model_no = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name" and not model:
                model = value
            elif key == "cpu family" and not family:
                family = value
            elif key == "model" and not model_no:
                model_no = value
    detail = f" (family {family}, model {model_no})" if family else ""
    virtual = ""
    with contextlib.suppress(OSError):
        if " hypervisor" in Path("/proc/cpuinfo").read_text():
            virtual = ", virtual machine"
    return (model or platform.processor() or "unknown") + detail + virtual


def _mem_total_gib() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _filesystem(path: Path) -> str:
    """The filesystem type holding `path` (fsync cost depends on it)."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], f"{parts[2]} ({parts[0]})"
    return kind


def machine_info(tmp_root: Path, cores: Cores) -> dict[str, Any]:
    import aiohttp

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(_mem_total_gib(), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "sqlite": sqlite3.sqlite_version,
        "aiosqlite": _version("aiosqlite"),
        "orjson": _version("orjson"),
        "erp_relay": _version("erp-relay"),
        "uvloop": _version("uvloop") or "not installed (relay serve uses the asyncio loop)",
        "temp_filesystem": _filesystem(tmp_root),
        "pinning": cores.describe(),
    }

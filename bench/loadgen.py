"""The load generator: an aiohttp client in its own process, used for every HTTP figure so ratios are fair.

    python -m bench.loadgen '<LoadSpec as JSON>'

Closed loop (`rate` unset): `connections` workers each send the next request as soon as the previous
answer arrives; the rate is counted over `[warmup, warmup + duration]`. Open loop (`rate` set): requests
start at fixed instants (`rate` per second) whatever the answers do, at most `connections` at once.

Prints one JSON line `{"started": <monotonic>}` when it begins and one JSON line of results at the end.
Timestamps are `time.monotonic()`, which on Linux is CLOCK_MONOTONIC: the same clock in every process.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import aiohttp
import orjson

from bench.common import TOKEN, event_body, percentiles, rounded

# A signature header of the real length, so the bare client sends as many bytes as the relay does.
_FAKE_SIGNATURE = "v1," + "A" * 44


@dataclass
class LoadSpec:
    urls: list[str]
    connections: int = 64
    duration_s: float = 10.0
    warmup_s: float = 2.0
    max_requests: int = 5_000_000
    rate: float | None = None
    dup_ratio: float = 0.0
    kind: Literal["push", "webhook"] = "push"
    record_path: str | None = None
    id_prefix: str = "bench"
    seed: int = 1
    timeout_s: float = 30.0


@dataclass
class _Tally:
    window_start: float
    window_end: float
    by_status_window: Counter[str] = field(default_factory=Counter)
    by_status_total: Counter[str] = field(default_factory=Counter)
    by_url_status_window: dict[str, Counter[str]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    records: list[tuple[str, float, float, int]] = field(default_factory=list)
    sent: int = 0
    duplicates_sent: int = 0


class _Requests:
    """Builds request n: a unique event id, or (with `dup_ratio`) one already sent."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.sent_ids: list[str] = []
        self.unique = 0
        if spec.kind == "push":
            self.headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        else:
            self.headers = {
                "content-type": "application/json",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": _FAKE_SIGNATURE,
                "relay-channel": "order/synced",
                "relay-source": "hub",
                "relay-attempt": "1",
                "relay-replay": "false",
            }

    def next(self, n: int) -> tuple[str, bytes, dict[str, str], bool]:
        duplicate = bool(self.sent_ids) and self.spec.dup_ratio > 0 and self.rng.random() < self.spec.dup_ratio
        if duplicate:
            event_id = self.rng.choice(self.sent_ids)
        else:
            event_id = f"{self.spec.id_prefix}-{self.unique}"
            self.unique += 1
            if len(self.sent_ids) < 200_000:
                self.sent_ids.append(event_id)
            else:
                self.sent_ids[self.rng.randrange(len(self.sent_ids))] = event_id
        headers = self.headers if self.spec.kind == "push" else {**self.headers, "webhook-id": event_id}
        return event_id, event_body(event_id, n), headers, duplicate


async def _one(
    session: aiohttp.ClientSession, url: str, requests: _Requests, tally: _Tally, n: int, *, record: bool
) -> None:
    event_id, body, headers, duplicate = requests.next(n)
    tally.sent += 1
    tally.duplicates_sent += duplicate
    sent = time.monotonic()
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            await resp.read()
            status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        tally.errors[type(exc).__name__] += 1
        await asyncio.sleep(0.01)  # a refused connection must not become a busy loop
        return
    done = time.monotonic()
    key = str(status)
    tally.by_status_total[key] += 1
    if tally.window_start <= done <= tally.window_end:
        tally.by_status_window[key] += 1
        tally.by_url_status_window.setdefault(url, Counter())[key] += 1
        tally.latencies_ms.append((done - sent) * 1000)
    if record:
        tally.records.append((event_id, sent, done, status))


async def _closed_loop(session: aiohttp.ClientSession, spec: LoadSpec, tally: _Tally, requests: _Requests) -> None:
    counter = iter(range(spec.max_requests))

    async def worker(k: int) -> None:
        url = spec.urls[k % len(spec.urls)]
        for n in counter:
            if time.monotonic() >= tally.window_end:
                return
            await _one(session, url, requests, tally, n, record=spec.record_path is not None)

    await asyncio.gather(*(worker(k) for k in range(spec.connections)))


async def _open_loop(session: aiohttp.ClientSession, spec: LoadSpec, tally: _Tally, requests: _Requests) -> None:
    assert spec.rate is not None
    slots = asyncio.Semaphore(spec.connections)
    tasks: set[asyncio.Task[None]] = set()
    first = time.monotonic()

    async def send(n: int) -> None:
        try:
            await _one(session, spec.urls[n % len(spec.urls)], requests, tally, n, record=True)
        finally:
            slots.release()

    for n in range(spec.max_requests):
        due = first + n / spec.rate
        if due >= tally.window_end:
            break
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        task = asyncio.create_task(send(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=spec.timeout_s)


async def run(spec: LoadSpec) -> dict[str, Any]:
    started = time.monotonic()
    sys.stdout.write(orjson.dumps({"started": started}).decode() + "\n")
    sys.stdout.flush()
    tally = _Tally(started + spec.warmup_s, started + spec.warmup_s + spec.duration_s)
    requests = _Requests(spec)
    cpu: dict[str, float] = {}

    async def measure_own_cpu() -> None:
        await asyncio.sleep(max(0.0, tally.window_start - time.monotonic()))
        cpu["start"] = time.process_time()
        await asyncio.sleep(max(0.0, tally.window_end - time.monotonic()))
        cpu["end"] = time.process_time()

    cpu_task = asyncio.create_task(measure_own_cpu())
    connector = aiohttp.TCPConnector(limit=spec.connections, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        if spec.rate is None:
            await _closed_loop(session, spec, tally, requests)
        else:
            await _open_loop(session, spec, tally, requests)
    await asyncio.wait_for(cpu_task, timeout=max(1.0, tally.window_end - time.monotonic() + 1.0))
    window = spec.duration_s
    ok = sum(v for k, v in tally.by_status_window.items() if k.startswith("2"))
    if spec.record_path is not None:
        with open(spec.record_path, "wb") as f:
            f.write(orjson.dumps(tally.records))
    result: dict[str, Any] = rounded(
        {
            "spec": asdict(spec),
            "started": started,
            "window_start": tally.window_start,
            "window_end": tally.window_end,
            "sent": tally.sent,
            "duplicates_sent": tally.duplicates_sent,
            "by_status_window": dict(tally.by_status_window),
            "by_status_total": dict(tally.by_status_total),
            # per target URL (several relay instances behind no load balancer: the generator spreads connections)
            "by_url_status_window": {url: dict(c) for url, c in tally.by_url_status_window.items()},
            "errors": dict(tally.errors),
            "rate_2xx": ok / window,
            "rate_by_status": {k: v / window for k, v in tally.by_status_window.items()},
            "latency_ms": percentiles(tally.latencies_ms),
            "cpu_pct": (cpu["end"] - cpu["start"]) / window * 100 if "end" in cpu else None,
        },
        6,
    )
    return result


def main() -> None:
    spec = LoadSpec(**orjson.loads(sys.argv[1]))
    result = asyncio.run(run(spec))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

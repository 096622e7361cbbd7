"""Bare aiohttp servers for the baselines and as webhook receivers, each run in its own process.

    python -m bench.servers sink                 # baseline A: answers 202 to every POST
    python -m bench.servers receivers --count 3  # webhook receivers answering 204, plus a stats port

Each prints one JSON line `{"ports": [...], "stats_port": N}` once it listens on 127.0.0.1, then runs until
SIGTERM (or `--max-seconds`, so a forgotten one cannot outlive the benchmark for long).
Receivers record the arrival (`time.monotonic()`, system-wide on Linux) of each `webhook-id`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

_ACCEPTED = orjson.dumps({"eventId": "x" * 24, "status": "accepted", "deliveries": 0})


@dataclass
class Receiver:
    """One webhook endpoint: counts requests and unique ids, keeps arrival times when asked."""

    index: int
    status: int
    record: bool
    total: int = 0
    ids: set[str] = field(default_factory=set)
    first: float | None = None
    last: float | None = None
    replays: int = 0
    receipts: list[tuple[str, float]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        now = time.monotonic()
        event_id = request.headers.get("webhook-id", "")
        self.total += 1
        self.ids.add(event_id)
        if self.first is None:
            self.first = now
        self.last = now
        if request.headers.get("relay-replay") == "true":
            self.replays += 1
        if self.record:
            self.receipts.append((event_id, now))
        return web.Response(status=self.status)

    def stats(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "unique": len(self.ids),
            "first": self.first,
            "last": self.last,
            "replays": self.replays,
        }

    def reset(self) -> None:
        self.total = self.replays = 0
        self.ids.clear()
        self.receipts.clear()
        self.first = self.last = None


async def _listen(app: web.Application, port: int = 0) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    return runner, int(sockets[0].getsockname()[1])


async def _until_stopped(max_seconds: float) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), max_seconds)


def _announce(value: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(value).decode() + "\n")
    sys.stdout.flush()


async def run_sink(status: int, max_seconds: float) -> None:
    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, body=_ACCEPTED, content_type="application/json")

    app = web.Application()
    app.router.add_post("/{tail:.*}", accept)
    runner, port = await _listen(app)
    _announce({"ports": [port], "stats_port": None})
    await _until_stopped(max_seconds)
    await runner.cleanup()


async def run_receivers(count: int, status: int, record: bool, max_seconds: float) -> None:
    receivers = [Receiver(i, status, record) for i in range(count)]
    runners: list[web.AppRunner] = []
    ports: list[int] = []
    for receiver in receivers:
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        runner, port = await _listen(app)
        runners.append(runner)
        ports.append(port)

    async def stats(request: web.Request) -> web.Response:
        each = [r.stats() for r in receivers]
        firsts = [s["first"] for s in each if s["first"] is not None]
        lasts = [s["last"] for s in each if s["last"] is not None]
        body = {
            "receivers": each,
            "total": sum(s["total"] for s in each),
            "unique": sum(s["unique"] for s in each),
            "replays": sum(s["replays"] for s in each),
            "first": min(firsts) if firsts else None,
            "last": max(lasts) if lasts else None,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def receipts(request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps([[r.index, eid, t] for r in receivers for eid, t in r.receipts]),
            content_type="application/json",
        )

    async def reset(request: web.Request) -> web.Response:
        for r in receivers:
            r.reset()
        return web.Response(status=204)

    control = web.Application()
    control.router.add_get("/stats", stats)
    control.router.add_get("/receipts", receipts)
    control.router.add_post("/reset", reset)
    control_runner, stats_port = await _listen(control)
    _announce({"ports": ports, "stats_port": stats_port})
    await _until_stopped(max_seconds)
    for runner in [*runners, control_runner]:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("mode", choices=["sink", "receivers"])
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--status", type=int, default=None)
    parser.add_argument("--record", action="store_true", help="keep (webhook-id, arrival) for latency")
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    args = parser.parse_args()
    if args.mode == "sink":
        asyncio.run(run_sink(args.status or 202, args.max_seconds))
    else:
        asyncio.run(run_receivers(args.count, args.status or 204, args.record, args.max_seconds))


if __name__ == "__main__":
    main()

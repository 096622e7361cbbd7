"""10,000 queued retries across 100 subscribers: every one is retried on schedule and delivered once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import aiohttp
from aiohttp import web
from fault_tools import Ledger, post_event
from helpers import WHSEC, base_config, relay_process, until, write_config
from standardwebhooks import Webhook


class Fleet:
    """100 subscribers on one server (`/hook/{n}`): each refuses a webhook's first attempt with 503."""

    def __init__(self) -> None:
        self.first_attempts: Counter[str] = Counter()
        self.delivered: Counter[tuple[str, str]] = Counter()
        self.bad_signatures = 0
        self.checked = 0
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        name = request.match_info["n"]
        event_id = request.headers["webhook-id"]
        if self.checked % 97 == 0:  # verify a sample as a receiver would; all of them would cost seconds
            try:
                Webhook(WHSEC).verify(body, dict(request.headers))
            except Exception:
                self.bad_signatures += 1
        self.checked += 1
        if request.headers["relay-attempt"] == "1":
            self.first_attempts[name] += 1
            return web.Response(status=503, text="warming up")
        self.delivered[(name, event_id)] += 1
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook/{n}", self._hook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}/hook/"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def test_ten_thousand_queued_retries_across_a_hundred_subscribers(tmp_path: Path, soak: bool) -> None:
    fleet = Fleet()
    await fleet.start()
    subscribers, events = 100, 500 if soak else 100
    data = base_config(
        tmp_path,
        subscribers=[
            {
                "name": f"sub-{n}",
                "url": f"{fleet.base}{n}",
                "secrets": [WHSEC],
                "allow_private_network": True,
                "max_in_flight": 8,
                "timeout": "10s",
                "retry": {"schedule": ["2s"], "max_age": "1h"},
                # Every first attempt fails on purpose: the breaker (tested on its own) would stop them.
                "circuit": {"failure_threshold": 1_000_000},
            }
            for n in range(subscribers)
        ],
    )
    config_path = write_config(tmp_path, data)
    total = subscribers * events
    try:
        with relay_process(config_path, tmp_path) as relay:
            await relay.wait_ready()
            ledger = Ledger()
            started = time.monotonic()
            async with aiohttp.ClientSession() as session:
                url = relay.base_url + "/v1/sources/hub/events"
                await asyncio.gather(*(post_event(session, url, f"bk-{i}", ledger) for i in range(events)))
            assert len(ledger.acked) == events, ledger.statuses
            # Every first attempt is refused: `total` retries queue up ...
            await until(lambda: sum(fleet.first_attempts.values()) >= total, timeout=120, interval=0.1)
            # ... and each is delivered, once, by its second attempt.
            await until(lambda: len(fleet.delivered) >= total, timeout=120, interval=0.1)
            elapsed = time.monotonic() - started
            assert sum(fleet.first_attempts.values()) == total
            assert set(fleet.first_attempts.values()) == {events}
            assert all(count == 1 for count in fleet.delivered.values())
            assert fleet.bad_signatures == 0
            async with aiohttp.ClientSession() as session:

                async def nothing_pending() -> bool:
                    async with session.get(relay.base_url + "/metrics") as r:
                        lines = (await r.text()).splitlines()
                    gauge = "relay_deliveries_pending{"
                    pending = [float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith(gauge)]
                    return len(pending) == subscribers and not any(pending)

                await until(nothing_pending, timeout=10, interval=0.2)
            print(f"{total} retries across {subscribers} subscribers delivered in {elapsed:.1f}s")
    finally:
        await fleet.stop()

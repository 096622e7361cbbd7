"""A request that outlasts `delivery.lease` keeps its delivery: the lease is renewed while the request is in
flight, so neither this process nor another instance on the same database claims and sends it a second time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from helpers import HUB_TOKEN, arun_cli, base_config, free_port, relay_process, sample_event, until
from helpers import write_config as write
from subscriber import Subscriber, subscriber_config

AUTH = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}
LEASE_S = 1.0
HOLD_S = 4.5  # four leases and more: without renewal the delivery would be claimed again meanwhile


@pytest.mark.parametrize("backend", ["sqlite", "postgres-2-instances"])
async def test_a_request_longer_than_the_lease_is_sent_once(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    arrivals: list[float] = []

    async def slow(sub: Subscriber, req: web.Request, body: bytes) -> int:
        arrivals.append(time.monotonic())
        await asyncio.sleep(HOLD_S)  # the subscriber is slow: this is what is under test, not a synchronisation
        return 200

    sub = Subscriber(behaviour=slow)
    await sub.start()
    store_url = request.getfixturevalue("postgres_url") if backend.startswith("postgres") else None
    configs = []
    for name in ("a", "b") if store_url else ("a",):
        folder = tmp_path / name
        folder.mkdir()
        data = base_config(
            folder,
            server={"listen": f"127.0.0.1:{free_port()}"},
            delivery={"lease": f"{LEASE_S}s", "poll_interval": "100ms"},
            subscribers=[subscriber_config("s", sub.url, channels=["order/*"], timeout="10s")],
        )
        if store_url:
            data["store"] = {"url": store_url}
        configs.append((folder, write(folder, data)))
    try:
        with contextlib.ExitStack() as stack:
            relays = [stack.enter_context(relay_process(config, folder)) for folder, config in configs]
            for relay in relays:
                await relay.wait_ready()
            first = relays[0]
            async with aiohttp.ClientSession() as session:
                body = orjson.dumps(sample_event("order/synced", "slow-1"))
                async with session.post(f"{first.base_url}/v1/sources/hub/events", data=body, headers=AUTH) as r:
                    assert r.status == 202, await r.text()
            await until(lambda: len(sub.delivered) >= 1, timeout=HOLD_S + 10)

            async def recorded() -> bool:
                shown = await arun_cli("deliveries", "list", "-c", str(configs[0][1]), "--json")
                assert shown.returncode == 0, shown.stderr
                rows = orjson.loads(shown.stdout)
                return [(d["eventId"], d["state"], d["attempts"]) for d in rows] == [("slow-1", "delivered", 1)]

            await until(recorded, timeout=10)
            assert len(arrivals) == 1, f"sent {len(arrivals)} times"
            assert [r.event_id for r in sub.delivered] == ["slow-1"]
            assert sub.delivered[0].verified
    finally:
        await sub.stop()

"""SIGKILL of `relay serve` mid-delivery: every event still reaches every subscriber at least once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web
from helpers import HUB_TOKEN, base_config, relay_process, sample_event, until, write_config
from subscriber import Subscriber, subscriber_config

HEADERS = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}


async def test_sigkill_mid_delivery_then_restart_delivers_everything(tmp_path: Path) -> None:
    async def slowish(sub: Subscriber, request: web.Request, body: bytes) -> int:
        await asyncio.sleep(0.02)
        return 200

    subs = [Subscriber(behaviour=slowish), Subscriber(behaviour=slowish)]
    for s in subs:
        await s.start()
    data = base_config(
        tmp_path,
        delivery={"lease": "1s", "poll_interval": "200ms"},
        subscribers=[
            subscriber_config("a", subs[0].url, timeout="1s", max_in_flight=4),
            subscriber_config("b", subs[1].url, timeout="1s", max_in_flight=4, ordering="per-key"),
        ],
    )
    config_path = write_config(tmp_path, data)
    ids = [f"k-{i}" for i in range(300)]
    try:
        with relay_process(config_path, tmp_path) as relay:
            await relay.wait_ready()
            async with aiohttp.ClientSession() as session:
                for i, event_id in enumerate(ids):
                    event = sample_event("order/synced", event_id, orderNumber=f"SO-{i % 7}")
                    url = relay.base_url + "/v1/sources/hub/events"
                    async with session.post(url, data=orjson.dumps(event), headers=HEADERS) as r:
                        assert r.status == 202
            await until(lambda: len(subs[0].delivered) >= 50 and len(subs[1].delivered) >= 50, timeout=30)
            relay.kill()
        assert all(len(s.delivered) < len(ids) for s in subs), "killed too late to test anything"
        with relay_process(config_path, tmp_path) as relay:
            await relay.wait_ready()
            await until(lambda: all(set(s.delivered_ids()) == set(ids) for s in subs), timeout=60)
        for s in subs:
            assert all(r.verified for r in s.requests)
            # A receiver deduplicating on webhook-id sees each event exactly once.
            assert sorted(set(s.delivered_ids())) == sorted(ids)
    finally:
        for s in subs:
            await s.stop()

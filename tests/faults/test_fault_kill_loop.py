"""SIGKILL again and again while events arrive and deliveries are in flight: nothing acknowledged is lost,
every event reaches every subscriber, and duplicates appear only as at-least-once delivery allows them
(a repeated `webhook-id`, never a second event)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from aiohttp import web
from fault_tools import Ledger, assert_nothing_acknowledged_lost, send_until, stored_event_ids, until_len
from helpers import base_config, relay_process, until, write_config
from subscriber import Subscriber, subscriber_config


async def test_sigkill_loop_during_ingest_and_delivery(tmp_path: Path, soak: bool) -> None:
    async def busy(sub: Subscriber, request: web.Request, body: bytes) -> int:
        await asyncio.sleep(0.005)  # a subscriber doing a little work per webhook
        return 200

    subs = [Subscriber(behaviour=busy), Subscriber(behaviour=busy)]
    for s in subs:
        await s.start()
    data = base_config(
        tmp_path,
        delivery={"lease": "1s", "poll_interval": "200ms"},
        subscribers=[
            subscriber_config("erp-mirror", subs[0].url, timeout="1s", max_in_flight=8),
            subscriber_config("shop", subs[1].url, timeout="1s", max_in_flight=8, ordering="per-key"),
        ],
    )
    config_path = write_config(tmp_path, data)
    ledger = Ledger()
    rng = random.Random(7)
    cycles = 30 if soak else 3
    try:
        for cycle in range(cycles):
            with relay_process(config_path, tmp_path) as relay:
                await relay.wait_ready()
                stop = asyncio.Event()
                url = relay.base_url + "/v1/sources/hub/events"
                senders = asyncio.create_task(send_until(url, ledger, stop, prefix=f"c{cycle}", senders=16, keys=50))
                # Kill at a different point each cycle: some acknowledged, deliveries part way.
                await until_len(ledger.acked, len(ledger.acked) + rng.randint(100, 600), timeout=60)
                relay.kill()
                stop.set()
                await senders
        # A last start with no load: everything acknowledged reaches both subscribers.
        with relay_process(config_path, tmp_path) as relay:
            await relay.wait_ready()
            acked = set(ledger.acked)
            await until(lambda: all(acked <= set(s.delivered_ids()) for s in subs), timeout=120, interval=0.2)
        assert_nothing_acknowledged_lost(ledger, stored_event_ids(config_path))
        assert len(ledger.acked) >= 100 * cycles
        for s in subs:
            assert all(r.verified for r in s.requests)
            received = s.delivered_ids()
            # Only events that were sent are delivered (an unacknowledged one may have been committed just
            # before the kill: then it is delivered too, which the sender's retry would have made happen).
            sent = acked | set(ledger.refused) | set(ledger.lost_connection)
            assert set(received) <= sent
            redelivered = len(received) - len(set(received))
            # Redeliveries come only from attempts cut off by a kill: bounded by in-flight per kill.
            assert redelivered <= cycles * 8 * 2, redelivered
    finally:
        for s in subs:
            await s.stop()

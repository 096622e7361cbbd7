"""A subscriber's `rate_limit` is one limit for every `relay serve` instance on a PostgreSQL store, not one per
instance: measured at the receiver."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson
import pytest
from helpers import HUB_TOKEN, base_config, free_port, relay_process, sample_event, until
from helpers import write_config as write
from subscriber import Subscriber, subscriber_config

RATE_PER_S = 10
BURST = 10  # the default burst: one second's worth
EVENTS = 150


def busiest_second(arrivals_s: list[float]) -> int:
    """The most arrivals in any window of one second (each window starting at an arrival)."""
    times = sorted(arrivals_s)
    best, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.mark.slow  # three `relay serve` processes and ~15 s of rate-limited deliveries
async def test_a_rate_limit_holds_across_three_instances(tmp_path: Path, postgres_url: str) -> None:
    sub = Subscriber()
    await sub.start()
    configs = []
    for name in ("a", "b", "c"):
        folder = tmp_path / name
        folder.mkdir()
        data = base_config(
            folder,
            store={"url": postgres_url},
            server={"listen": f"127.0.0.1:{free_port()}"},
            subscribers=[subscriber_config("s", sub.url, channels=["order/*"], rate_limit=RATE_PER_S)],
        )
        configs.append((folder, write(folder, data)))
    auth = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}
    try:
        with (
            relay_process(configs[0][1], configs[0][0]) as a,
            relay_process(configs[1][1], configs[1][0]) as b,
            relay_process(configs[2][1], configs[2][0]) as c,
        ):
            relays = [a, b, c]
            for relay in relays:
                await relay.wait_ready()
            async with aiohttp.ClientSession() as session:
                for n in range(EVENTS):
                    body = orjson.dumps(sample_event("order/synced", f"evt-{n}"))
                    url = f"{relays[n % 3].base_url}/v1/sources/hub/events"
                    async with session.post(url, data=body, headers=auth) as resp:
                        assert resp.status == 202, await resp.text()
            await until(lambda: len(sub.delivered) >= EVENTS, timeout=30)
            ids = sub.delivered_ids()
            assert sorted(ids) == sorted(f"evt-{n}" for n in range(EVENTS))
            assert all(r.verified for r in sub.delivered)
            arrivals = [r.at for r in sub.requests]
            peak = busiest_second(arrivals)
            span_s = max(arrivals) - min(arrivals)
            print(f"rate_limit {RATE_PER_S}/s over 3 instances: busiest second {peak}, {EVENTS} in {span_s:.1f} s")
            # One bucket for all: at most the rate plus the burst in any second (three buckets would allow 3×
            # that, ~60), plus the one token each instance may hold from just before the window (tokens are
            # taken a tenth of a second's worth at a time: one at 10/s); and the whole run at about the rate.
            assert peak <= RATE_PER_S + BURST + len(relays), peak
            assert span_s >= (EVENTS - BURST) / RATE_PER_S - 1.0, span_s
            assert span_s <= (EVENTS - BURST) / RATE_PER_S + 6.0, span_s
    finally:
        await sub.stop()

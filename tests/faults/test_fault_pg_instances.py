"""Three `relay serve` instances on one PostgreSQL database, 64 senders spread over them, and a random instance
SIGKILLed every ~2 s (each restarted at once) for at least 20 kills: every acknowledged event reaches every
subscriber, per-key version order holds across instances, duplicates are only repeated `webhook-id`s (counted
and printed), and nothing is left pending."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from fault_tools import Ledger, post_event
from helpers import RelayProcess, base_config, free_port, until, write_config
from subscriber import Subscriber, subscriber_config

INSTANCES = 3
SENDERS = 64
KEYS_PER_SENDER = 4
KILLS = 20
SEND_PAUSE_S = 0.15  # per sender between posts: at most ~400 events/s offered by the 64 senders
KILL_EVERY_S = 2.0
BUDGET_S = 90.0  # the whole test, load, kills and drain, stops by itself within this
VERSION_BASE = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def version_of(n: int) -> str:
    """The n-th version a sender gives its keys: increasing timestamps (the order key of order/synced)."""
    return (VERSION_BASE + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def send_spread(urls: list[str], ledger: Ledger, stop: asyncio.Event) -> None:
    """SENDERS loops, each posting unique events over all instances in turn; each sender owns its keys and sends
    their versions in order, so commit order is version order per key."""

    async def loop(session: aiohttp.ClientSession, worker: int) -> None:
        n = 0
        while not stop.is_set():
            url = urls[(worker + n) % len(urls)]
            event_id = f"w{worker}-{n}"
            order = {"orderNumber": f"SO-{worker}-{n % KEYS_PER_SENDER}"}
            status = await post_event(session, url, event_id, ledger, version=version_of(n), **order)
            # Paced, so the deliveries keep up on a 2-core box and the drain fits the time budget; a sender whose
            # instance is down backs off a little longer before the next one.
            await asyncio.sleep(SEND_PAUSE_S if status else 3 * SEND_PAUSE_S)
            n += 1

    connector = aiohttp.TCPConnector(limit=SENDERS)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(*(loop(session, w) for w in range(SENDERS)))


async def delivery_states(postgres_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(postgres_url)
    try:
        rows = await conn.fetch("SELECT state, count(*) FROM deliveries GROUP BY state")
    finally:
        await conn.close()
    return {r[0]: r[1] for r in rows}


def first_seen(sub: Subscriber) -> list[tuple[str, str, str]]:
    """(event id, key, version) of each delivered event at its first verified arrival (dedup on webhook-id)."""
    seen: set[str] = set()
    out = []
    for r in sub.delivered:
        if r.verified and r.event_id not in seen:
            seen.add(r.event_id)
            out.append((r.event_id, r.payload["data"]["orderNumber"], r.payload["timestamp"]))
    return out


@pytest.mark.slow  # three instances, 64 senders, 20 kills: about a minute
async def test_three_instances_killed_at_random_lose_nothing_and_keep_per_key_order(
    tmp_path: Path, postgres_url: str
) -> None:
    started = time.monotonic()
    deadline = started + BUDGET_S

    async def busy(_sub: Subscriber, _request: web.Request, _body: bytes) -> int:
        await asyncio.sleep(0.002)  # a subscriber doing a little work per webhook
        return 200

    mirror, shop = Subscriber(behaviour=busy), Subscriber(behaviour=busy)
    await mirror.start()
    await shop.start()
    relays: list[RelayProcess] = []
    for name in range(INSTANCES):
        folder = tmp_path / f"i{name}"
        folder.mkdir()
        data = base_config(
            folder,
            store={"url": postgres_url},
            server={"listen": f"127.0.0.1:{free_port()}"},
            delivery={"lease": "1s", "poll_interval": "200ms"},
            subscribers=[
                subscriber_config("mirror", mirror.url, timeout="1s", max_in_flight=16),
                subscriber_config("shop", shop.url, timeout="1s", max_in_flight=16, ordering="per-key"),
            ],
        )
        relays.append(RelayProcess(write_config(folder, data), folder / "relay.log"))
    ledger = Ledger()
    rng = random.Random(15)
    stop = asyncio.Event()
    kills = 0
    try:
        for relay in relays:
            relay.start()
        for relay in relays:
            await relay.wait_ready()
        senders = asyncio.create_task(
            send_spread([r.base_url + "/v1/sources/hub/events" for r in relays], ledger, stop)
        )
        try:
            # The fault schedule: a random instance killed every ~2 s and restarted at once (not waited for:
            # an instance still starting may be the next one killed, as in a crash loop).
            next_kill_at = time.monotonic()
            while kills < KILLS and time.monotonic() < deadline - 35:
                next_kill_at += KILL_EVERY_S * rng.uniform(0.5, 1.5)
                await asyncio.sleep(max(0.0, next_kill_at - time.monotonic()))
                victim = rng.choice(relays)
                victim.kill()
                victim.close()
                kills += 1
                victim.start()
            for relay in relays:
                await relay.wait_ready(timeout=20)
        finally:
            stop.set()
            await senders
        load_s = time.monotonic() - started
        assert kills >= KILLS, f"only {kills} kills within the time budget"
        assert not ledger.unexpected, ledger.unexpected[:5]
        acked = set(ledger.acked)
        assert len(acked) >= 1000, len(acked)

        # Every acknowledged event reaches both subscribers, and nothing stays pending.
        def all_delivered() -> bool:
            return acked <= set(mirror.delivered_ids()) and acked <= set(shop.delivered_ids())

        await until(all_delivered, timeout=max(5.0, deadline - time.monotonic()), interval=0.2)
        await until(lambda: _no_pending(postgres_url), timeout=max(5.0, deadline - time.monotonic() + 5), interval=0.2)
        states = await delivery_states(postgres_url)
        assert states.get("dead", 0) == 0, states

        sent = acked | set(ledger.refused) | set(ledger.lost_connection)
        duplicates = {}
        for name, sub in (("mirror", mirror), ("shop", shop)):
            assert all(r.verified for r in sub.requests), name
            ids = sub.delivered_ids()
            assert set(ids) <= sent, name  # only events that were sent (an unacknowledged one may be stored)
            duplicates[name] = len(ids) - len(set(ids))
        # Per-key order across instances at the per-key subscriber: each key's versions in order.
        per_key: dict[str, list[str]] = {}
        for _, key, version in first_seen(shop):
            per_key.setdefault(key, []).append(version)
        for key, versions in per_key.items():
            assert versions == sorted(versions), (key, versions[:20])
        print(
            f"\n{INSTANCES} instances, {SENDERS} senders, {kills} SIGKILLs in {load_s:.0f} s: "
            f"{len(acked)} acknowledged ({len(ledger.lost_connection)} connections lost, "
            f"{len(ledger.refused)} refused), delivered to both; duplicate deliveries: {duplicates}; "
            f"states: {states}; total {time.monotonic() - started:.0f} s"
        )
        assert time.monotonic() - started <= BUDGET_S + 10
    finally:
        stop.set()
        for relay in relays:
            relay.kill()
            relay.close()
        await mirror.stop()
        await shop.stop()


async def _no_pending(postgres_url: str) -> bool:
    return (await delivery_states(postgres_url)).get("pending", 0) == 0

"""Shared work across instances on one PostgreSQL store: an X3 resource is polled by one `relay serve` at a time,
and when that instance is killed another takes over within the documented bound, without delivering anything
twice; a circuit opened on one instance holds on the others."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
from helpers import HUB_TOKEN, base_config, free_port, relay_process, sample_event, until
from helpers import write_config as write
from subscriber import Subscriber, subscriber_config

from relay.sim.x3 import running_x3_simulator

LEASE_S = 2.0
# docs/scaling.md: a dead holder's resources are polled elsewhere within the lease plus a third of it.
FAILOVER_BOUND_S = LEASE_S + LEASE_S / 3


async def poll_runs(session: aiohttp.ClientSession, base_url: str) -> float:
    """This instance's successful polls, from its /metrics."""
    async with session.get(base_url + "/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("relay_poll_runs_total{") and 'outcome="success"' in line
    )


async def lease_holder(postgres_url: str) -> str | None:
    conn = await asyncpg.connect(postgres_url)
    try:
        owner: str | None = await conn.fetchval("SELECT owner FROM poll_leases WHERE expires_at > clock_timestamp()")
        return owner
    finally:
        await conn.close()


@pytest.mark.slow  # three `relay serve` processes over several lease periods
async def test_one_instance_polls_a_resource_and_another_takes_over_when_it_is_killed(
    tmp_path: Path, postgres_url: str
) -> None:
    sub = Subscriber()
    await sub.start()
    async with running_x3_simulator(seed_data=False) as (sim, x3_url):
        sim.seed_records("BPCUSTOMER", 12)
        configs = []
        for name in ("a", "b", "c"):
            folder = tmp_path / name
            folder.mkdir()
            source = {
                "name": "aldgate-x3",
                "kind": "x3",
                "base_url": x3_url,
                "folder": "ALDGATE",
                "auth": {"type": "basic", "username": "admin", "password": "aldgate"},
                "resources": [{"class": "BPCUSTOMER", "channel": "customer/synced", "every": "200ms", "jitter": 0}],
            }
            data = base_config(
                folder,
                store={"url": postgres_url, "poll_lease": f"{LEASE_S}s"},
                server={"listen": f"127.0.0.1:{free_port()}"},
                subscribers=[subscriber_config("s", sub.url, channels=["customer/*"])],
            )
            data["sources"].append(source)
            configs.append((folder, write(folder, data)))
        try:
            with (
                relay_process(configs[0][1], configs[0][0]) as a,
                relay_process(configs[1][1], configs[1][0]) as b,
                relay_process(configs[2][1], configs[2][0]) as c,
            ):
                relays = [a, b, c]
                for relay in relays:
                    await relay.wait_ready()
                await until(lambda: len(sub.delivered) >= 12, timeout=20)
                async with aiohttp.ClientSession() as session:
                    # Several polls later, one instance has polled and the others none.
                    async def polled_five_times() -> bool:
                        return max([await poll_runs(session, r.base_url) for r in relays]) >= 5

                    await until(polled_five_times, timeout=20)
                    runs = [await poll_runs(session, r.base_url) for r in relays]
                    assert sorted(n > 0 for n in runs) == [False, False, True], runs
                    holder = relays[[n > 0 for n in runs].index(True)]
                    assert max(runs) >= 5
                    owner = await lease_holder(postgres_url)
                    assert owner is not None
                    assert f"/{holder.pid}/" in owner

                    holder.kill()
                    killed_at = time.monotonic()
                    survivors = [r for r in relays if r is not holder]

                    async def survivor_polled() -> bool:
                        return any([await poll_runs(session, r.base_url) > 0 for r in survivors])

                    await until(survivor_polled, timeout=FAILOVER_BOUND_S + 5)
                    failover_s = time.monotonic() - killed_at
                    # +2 s: polls every 200 ms, scrapes, a busy CI box.
                    assert failover_s <= FAILOVER_BOUND_S + 2.0, failover_s
                    counts = [await poll_runs(session, r.base_url) for r in survivors]
                    assert sorted(n > 0 for n in counts) == [False, True], counts

                # Changes made after the failover are delivered once, like everything before.
                changed = sim.change("BPCUSTOMER", 3)
                await until(lambda: len(sub.delivered) >= 15, timeout=20)
                ids = sub.delivered_ids()
                assert len(ids) == len(set(ids)) == 15, sorted(ids)
                assert all(r.verified for r in sub.delivered)
                assert len(changed) == 3
                print(f"poller failover after SIGKILL: {failover_s:.2f} s (bound {FAILOVER_BOUND_S:.2f} s)")
        finally:
            await sub.stop()


async def circuit_open(session: aiohttp.ClientSession, base_url: str) -> bool:
    async with session.get(base_url + "/metrics") as resp:
        text = await resp.text()
    return 'relay_subscriber_circuit_open{subscriber="s"} 1.0' in text


async def pending_gauge(session: aiohttp.ClientSession, base_url: str) -> float:
    async with session.get(base_url + "/metrics") as resp:
        text = await resp.text()
    lines = [ln for ln in text.splitlines() if ln.startswith('relay_deliveries_pending{subscriber="s"}')]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


@pytest.mark.slow  # two `relay serve` processes
async def test_a_circuit_opened_on_one_instance_holds_on_another(tmp_path: Path, postgres_url: str) -> None:
    sub = Subscriber(behaviour=lambda *_: 500)
    await sub.start()
    configs = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        failing = subscriber_config(
            "s", sub.url, channels=["order/*"], circuit={"failure_threshold": 2, "cooldown": "60s"}
        )
        data = base_config(
            folder,
            store={"url": postgres_url},
            server={"listen": f"127.0.0.1:{free_port()}"},
            subscribers=[failing],
        )
        configs.append((folder, write(folder, data)))
    auth = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}
    try:
        async with aiohttp.ClientSession() as session:
            with relay_process(configs[0][1], configs[0][0]) as a:
                await a.wait_ready()
                for n in range(3):
                    body = orjson.dumps(sample_event("order/synced", f"before-{n}"))
                    async with session.post(f"{a.base_url}/v1/sources/hub/events", data=body, headers=auth) as r:
                        assert r.status == 202
                await until(lambda: circuit_open(session, a.base_url), timeout=20)
                sent_by_a = len(sub.requests)
                assert sent_by_a >= 2
                # A second instance starts while the circuit is open: it holds it open too and sends nothing,
                # even for events it receives itself.
                with relay_process(configs[1][1], configs[1][0]) as b:
                    await b.wait_ready()
                    await until(lambda: circuit_open(session, b.base_url), timeout=10)
                    for n in range(5):
                        body = orjson.dumps(sample_event("order/synced", f"on-b-{n}"))
                        async with session.post(f"{b.base_url}/v1/sources/hub/events", data=body, headers=auth) as r:
                            assert r.status == 202
                    # B's gauges refresh after its dispatcher was woken by those events.
                    conn = await asyncpg.connect(postgres_url)
                    try:
                        pending = await conn.fetchval("SELECT count(*) FROM deliveries WHERE state = 'pending'")
                    finally:
                        await conn.close()
                    assert pending >= 5

                    async def b_counted_them() -> bool:
                        return await pending_gauge(session, b.base_url) == pending

                    await until(b_counted_them, timeout=10)
                    assert len(sub.requests) == sent_by_a
    finally:
        await sub.stop()

"""`relay instances` and `GET /v1/admin/instances`: the live `relay serve` processes on one store, each with its
heartbeat, the poll leases and deliveries it holds, and its version."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from helpers import HUB_TOKEN, base_config, free_port, relay_process, run_cli, sample_event, until
from helpers import write_config as write
from prometheus_client.parser import text_string_to_metric_families
from subscriber import Subscriber, subscriber_config

from relay import __version__
from relay.sim.x3 import running_x3_simulator

ADMIN_TOKEN = "admin-token-for-instances-0123456789"


async def cli_instances(config_path: Path) -> list[dict[str, Any]]:
    """`relay instances --json` run as its own process (beside the test's event loop)."""
    result = await asyncio.to_thread(run_cli, "instances", "-c", str(config_path), "--json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = orjson.loads(result.stdout)
    return rows


@pytest.mark.slow  # two `relay serve` processes and a few heartbeats
async def test_two_instances_are_listed_with_their_leases_and_a_stopped_one_is_not(
    tmp_path: Path, postgres_url: str
) -> None:
    release = asyncio.Event()

    async def hold_until_released(_sub: Subscriber, _request: web.Request, _body: bytes) -> int:
        await release.wait()
        return 200

    sub = Subscriber(behaviour=hold_until_released)
    await sub.start()
    async with running_x3_simulator(seed_data=False) as (sim, x3_url):
        sim.seed_records("BPCUSTOMER", 2)
        configs = []
        for name in ("a", "b"):
            folder = tmp_path / name
            folder.mkdir()
            data = base_config(
                folder,
                store={"url": postgres_url, "poll_lease": "2s"},
                server={"listen": f"127.0.0.1:{free_port()}"},
                admin={"tokens": [ADMIN_TOKEN]},
                subscribers=[subscriber_config("s", sub.url, channels=["order/*"], timeout="30s")],
            )
            data["sources"].append(
                {
                    "name": "aldgate-x3",
                    "kind": "x3",
                    "base_url": x3_url,
                    "folder": "ALDGATE",
                    "auth": {"type": "basic", "username": "admin", "password": "aldgate"},
                    "resources": [{"class": "BPCUSTOMER", "channel": "customer/synced", "every": "1s"}],
                }
            )
            configs.append((folder, write(folder, data)))
        try:
            with relay_process(configs[0][1], configs[0][0]) as a, relay_process(configs[1][1], configs[1][0]) as b:
                await a.wait_ready()
                await b.wait_ready()
                # One delivery held open by the subscriber: in flight on whichever instance claimed it.
                async with aiohttp.ClientSession() as session:
                    body = orjson.dumps(sample_event("order/synced", "held-1"))
                    auth = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}
                    async with session.post(f"{a.base_url}/v1/sources/hub/events", data=body, headers=auth) as r:
                        assert r.status == 202

                    async def settled() -> list[dict[str, Any]] | None:
                        rows = await cli_instances(configs[0][1])
                        in_flight = sum(r["deliveriesInFlight"] for r in rows)
                        leases = sum(r["pollLeases"] for r in rows)
                        return rows if len(rows) == 2 and in_flight == 1 and leases == 1 else None

                    # Counts are as of each instance's last heartbeat (every 5 s).
                    await until(settled, timeout=20, interval=0.5)
                    rows = await settled()
                    assert rows is not None
                    pids = {a.pid, b.pid}
                    assert {r["pid"] for r in rows} == pids
                    assert all(r["version"] == __version__ for r in rows)
                    assert all(f"/{r['pid']}/" in r["id"] for r in rows)
                    assert all(r["heartbeatAt"] >= r["startedAt"] for r in rows)

                    # The admin API answers the same list (it is in the OpenAPI document too).
                    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
                    async with session.get(f"{b.base_url}/v1/admin/instances", headers=admin) as r:
                        assert r.status == 200
                        listed = await r.json()
                    assert {i["id"] for i in listed} == {i["id"] for i in rows}
                    async with session.get(f"{b.base_url}/v1/admin/openapi.json", headers=admin) as r:
                        assert "/v1/admin/instances" in (await r.json())["paths"]

                    # Each instance's /metrics names it as `relay instances` does, in one series.
                    ids_by_pid = {r["pid"]: r["id"] for r in rows}
                    for relay in (a, b):
                        async with session.get(f"{relay.base_url}/metrics") as r:
                            exposition = await r.text()
                        (info,) = [
                            s.labels
                            for family in text_string_to_metric_families(exposition)
                            for s in family.samples
                            if s.name == "relay_instance_info"
                        ]
                        assert info == {
                            "instance_id": ids_by_pid[relay.pid],
                            "version": __version__,
                            "store": "postgres",
                        }

                    release.set()
                    await until(lambda: len(sub.delivered) == 1, timeout=10)
                    # A clean stop removes the instance at once.
                    a_pid = a.pid
                    a.signal(signal.SIGTERM)
                    assert a.wait(timeout=30) == 0
                    rows = await cli_instances(configs[1][1])
                    assert [r["pid"] for r in rows] == [b.pid]
                    assert a_pid not in {r["pid"] for r in rows}
        finally:
            release.set()
            await sub.stop()


async def test_the_one_sqlite_process_is_listed(tmp_path: Path) -> None:
    data = base_config(tmp_path)
    config_path = write(tmp_path, data)
    assert await cli_instances(config_path) == []  # nothing serves this store yet
    with relay_process(config_path, tmp_path) as relay:
        await relay.wait_ready()
        rows = await cli_instances(config_path)
        assert [(r["pid"], r["version"], r["pollLeases"], r["deliveriesInFlight"]) for r in rows] == [
            (relay.pid, __version__, 0, 0)
        ]

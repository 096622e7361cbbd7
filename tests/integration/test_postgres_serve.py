"""`relay serve` on a PostgreSQL store, as a user runs it: migrate, ingest on two instances sharing one database,
signed deliveries (verified with standardwebhooks) exactly once each, and a replay from the CLI."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import asyncpg
import orjson
from helpers import HUB_TOKEN, arun_cli, base_config, free_port, relay_process, run_cli, sample_event, until
from helpers import write_config as write
from subscriber import Subscriber, subscriber_config

from relay.store._sql import migrations

AUTH = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}


async def test_two_instances_on_one_postgresql_database_deliver_each_event_once_and_replay(
    tmp_path: Path, postgres_url: str
) -> None:
    sub = Subscriber()
    await sub.start()
    configs = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        data = base_config(
            folder,
            store={"url": postgres_url},
            server={"listen": f"127.0.0.1:{free_port()}"},
            subscribers=[subscriber_config("s", sub.url, channels=["order/*"])],
        )
        configs.append((folder, write(folder, data)))

    migrated = run_cli("migrate", "-c", str(configs[0][1]))
    assert migrated.returncode == 0, migrated.stderr
    assert f"at schema version {migrations('postgres')[-1].version}" in migrated.stdout
    assert "postgres@" not in migrated.stdout  # the user part of the URL is masked

    try:
        with (
            relay_process(configs[0][1], configs[0][0]) as first,
            relay_process(configs[1][1], configs[1][0]) as second,
        ):
            await first.wait_ready()
            await second.wait_ready()
            async with aiohttp.ClientSession() as session:
                for i in range(40):
                    relay = (first, second)[i % 2]
                    body = orjson.dumps(sample_event("order/synced", f"pg-{i}"))
                    async with session.post(f"{relay.base_url}/v1/sources/hub/events", data=body, headers=AUTH) as r:
                        assert r.status == 202, await r.text()
                # The same id through the other instance is a duplicate: stored once, delivered once.
                again = orjson.dumps(sample_event("order/synced", "pg-0"))
                async with session.post(f"{second.base_url}/v1/sources/hub/events", data=again, headers=AUTH) as r:
                    assert r.status in (200, 202), await r.text()
            await until(lambda: len(sub.delivered) >= 40, timeout=20)
            assert sorted(sub.delivered_ids()) == sorted(f"pg-{i}" for i in range(40))
            assert all(r.verified for r in sub.delivered)
            assert len({r.headers["webhook-id"] for r in sub.delivered}) == 40

            replay = await arun_cli("replay", "-c", str(configs[1][1]), "--event-id", "pg-7")
            assert replay.returncode == 0, replay.stderr
            assert "1 replay deliveries created" in replay.stdout
            await until(lambda: len(sub.delivered) == 41, timeout=10)
            last = sub.delivered[-1]
            assert (last.event_id, last.headers["relay-replay"], last.verified) == ("pg-7", "true", True)
    finally:
        await sub.stop()


async def test_migrate_refuses_a_newer_schema_in_one_line(tmp_path: Path, postgres_url: str) -> None:
    config = write(tmp_path, base_config(tmp_path, store={"url": postgres_url}))
    assert run_cli("migrate", "-c", str(config)).returncode == 0
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', '')")
    finally:
        await conn.close()
    refused = run_cli("migrate", "-c", str(config))
    assert refused.returncode == 1
    assert refused.stdout == ""
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: store: ")
    assert "schema version 999, newer than this relay knows" in line


async def test_a_replay_from_the_cli_is_sent_at_once_not_at_the_next_poll(tmp_path: Path, postgres_url: str) -> None:
    sub = Subscriber()
    await sub.start()
    # Polling every 30 s: only the wake-up from the replaying process can make the relay send within seconds.
    data = base_config(
        tmp_path,
        store={"url": postgres_url},
        delivery={"poll_interval": "30s"},
        subscribers=[subscriber_config("s", sub.url, channels=["order/*"])],
    )
    config = write(tmp_path, data)
    try:
        with relay_process(config, tmp_path) as relay:
            await relay.wait_ready()
            async with aiohttp.ClientSession() as session:
                body = orjson.dumps(sample_event("order/synced", "woken-1"))
                async with session.post(f"{relay.base_url}/v1/sources/hub/events", data=body, headers=AUTH) as r:
                    assert r.status == 202, await r.text()
            await until(lambda: sub.delivered_ids() == ["woken-1"], timeout=10)
            started = time.monotonic()
            replay = await arun_cli("replay", "-c", str(config), "--event-id", "woken-1")
            assert replay.returncode == 0, replay.stderr
            await until(lambda: len(sub.delivered) == 2, timeout=10)
            assert time.monotonic() - started < 10  # well inside the 30 s poll interval
            assert (sub.delivered[-1].headers["relay-replay"], sub.delivered[-1].verified) == ("true", True)
    finally:
        await sub.stop()

"""`relay serve` as a subprocess: SIGKILL under load loses no acknowledged event; SIGTERM drains."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp
import orjson
from helpers import HUB_TOKEN, base_config, relay_process, run_cli, sample_event, until, write_config

HEADERS = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}


async def _sender(session: aiohttp.ClientSession, url: str, worker: int, acked: list[str], stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        event_id = f"w{worker}-{n}"
        n += 1
        try:
            async with session.post(
                url, data=orjson.dumps(sample_event("order/synced", event_id)), headers=HEADERS
            ) as r:
                if r.status == 202:
                    acked.append(event_id)
                elif r.status not in (503,):
                    raise AssertionError(f"unexpected status {r.status}: {await r.text()}")
        except (TimeoutError, aiohttp.ClientError):
            await asyncio.sleep(0.01)  # the relay is gone: back off before the next try


async def test_sigkill_under_64_senders_loses_no_acknowledged_event(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, base_config(tmp_path))
    acked: list[str] = []
    with relay_process(config_path, tmp_path) as relay:
        await relay.wait_ready()
        url = relay.base_url + "/v1/sources/hub/events"
        stop = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
            senders = [asyncio.create_task(_sender(session, url, w, acked, stop)) for w in range(64)]
            await until(lambda: len(acked) >= 1500, timeout=60)
            relay.kill()  # SIGKILL while requests are in flight
            stop.set()
            await asyncio.gather(*senders)
    assert len(acked) >= 1500
    # Restart on the same file: every acknowledged event is there, once.
    with relay_process(config_path, tmp_path) as relay:
        await relay.wait_ready()
        listed = run_cli("events", "list", "-c", str(config_path), "--json", "--limit", "1000000")
        assert listed.returncode == 0, listed.stderr
        ids = [e["eventId"] for e in json.loads(listed.stdout)]
    assert len(ids) == len(set(ids))
    missing = set(acked) - set(ids)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"


async def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, base_config(tmp_path))
    acked: list[str] = []
    with relay_process(config_path, tmp_path) as relay:
        await relay.wait_ready()
        url = relay.base_url + "/v1/sources/hub/events"
        stop = asyncio.Event()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            senders = [asyncio.create_task(_sender(session, url, w, acked, stop)) for w in range(16)]
            await until(lambda: len(acked) >= 200, timeout=30)
            relay.signal(signal.SIGTERM)
            code = await asyncio.get_running_loop().run_in_executor(None, relay.wait, 30.0)
            stop.set()
            await asyncio.gather(*senders)
        assert code == 0, relay.log_text()[-2000:]
        log = relay.log_text()
        assert "Traceback" not in log
        assert '"stopped"' in log
    listed = run_cli("events", "list", "-c", str(config_path), "--json", "--limit", "1000000")
    ids = {e["eventId"] for e in json.loads(listed.stdout)}
    assert set(acked) <= ids

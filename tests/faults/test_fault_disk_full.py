"""The SQLite volume fills up: ingest answers 503 and acknowledges nothing it did not commit; it recovers.

The full disk is a file size limit (RLIMIT_FSIZE, as systemd's LimitFSIZE= sets) put on the running relay:
every write past the limit fails as on a full volume, without needing a loop mount.
"""

from __future__ import annotations

import asyncio
import resource
import signal
from pathlib import Path

import aiohttp
from fault_tools import (
    Ledger,
    assert_nothing_acknowledged_lost,
    post_event,
    send_until,
    stored_event_ids,
    until_len,
)
from helpers import base_config, relay_process, until, write_config
from subscriber import Subscriber, subscriber_config


def _store_files(tmp_path: Path) -> list[Path]:
    return [p for p in tmp_path.iterdir() if p.name.startswith("relay.db")]


async def test_full_volume_answers_503_then_recovers_without_losing_acknowledged_events(
    tmp_path: Path, soak: bool
) -> None:
    subscriber = Subscriber()
    await subscriber.start()
    data = base_config(tmp_path, subscribers=[subscriber_config("warehouse", subscriber.url)])
    config_path = write_config(tmp_path, data)
    ledger = Ledger()
    rounds = 4 if soak else 1
    try:
        # The log is piped, so the size limit never touches it.
        with relay_process(config_path, tmp_path, pipe_log=True) as relay:
            await relay.wait_ready()
            url = relay.base_url + "/v1/sources/hub/events"
            for round_no in range(rounds):
                stop = asyncio.Event()
                warmup = asyncio.create_task(send_until(url, ledger, stop, prefix=f"warm{round_no}", senders=8))
                before = len(ledger.acked)
                await until_len(ledger.acked, before + 200, timeout=30)
                stop.set()
                await warmup

                # Fill the volume: no file of the store may grow more than 256 KiB past its current size.
                limit = max(p.stat().st_size for p in _store_files(tmp_path)) + 256 * 1024
                resource.prlimit(relay.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
                refused_before = len(ledger.refused)
                stop = asyncio.Event()
                full = asyncio.create_task(send_until(url, ledger, stop, prefix=f"full{round_no}", senders=16))
                await until_len(ledger.refused, refused_before + 100, timeout=60)
                stop.set()
                await full
                assert relay.proc is not None
                assert relay.proc.poll() is None, "the relay died on a full volume"
                async with aiohttp.ClientSession() as session, session.get(relay.base_url + "/livez") as r:
                    assert r.status == 200

                # Space returns: the very next events are accepted, and every refused one can be sent again.
                resource.prlimit(relay.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
                retry = Ledger()
                async with aiohttp.ClientSession() as session:
                    for event_id in ledger.refused[refused_before:]:
                        status = await post_event(session, url, event_id, retry)
                        assert status in (200, 202), retry.unexpected
                ledger.acked.extend(retry.acked)

            assert ledger.statuses[503] >= 100 * rounds
            log = relay.log_text()
            assert "commit failed" in log
            # Everything acknowledged reaches the subscriber once the disk has room again.
            await until(lambda: set(ledger.acked) <= set(subscriber.delivered_ids()), timeout=90)
            relay.signal(signal.SIGTERM)
            assert await asyncio.to_thread(relay.wait, 30.0) == 0
        assert_nothing_acknowledged_lost(ledger, stored_event_ids(config_path))
        assert all(r.verified for r in subscriber.requests)
    finally:
        await subscriber.stop()

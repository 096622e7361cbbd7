"""Another process holds the SQLite write lock: ingest answers 503 after `store.busy_timeout`, never hangs,
acknowledges nothing it did not commit, and carries on (ingest and delivery) once the lock is released."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from fault_tools import Ledger, assert_nothing_acknowledged_lost, post_event, send_until, stored_event_ids, until_len
from helpers import base_config, relay_process, until, write_config
from subscriber import Subscriber, subscriber_config

# Takes the write lock, says so, and keeps it until its stdin closes.
LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


class Locker:
    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=10) == 0
        assert self.proc.stdout is not None
        self.proc.stdout.close()


async def test_database_locked_by_another_process_answers_503_then_recovers(tmp_path: Path, soak: bool) -> None:
    subscriber = Subscriber()
    await subscriber.start()
    data = base_config(
        tmp_path,
        store={"url": f"sqlite://{tmp_path / 'relay.db'}", "busy_timeout": "1s"},
        subscribers=[subscriber_config("warehouse", subscriber.url)],
    )
    config_path = write_config(tmp_path, data)
    ledger = Ledger()
    rounds = 6 if soak else 1
    try:
        with relay_process(config_path, tmp_path) as relay:
            await relay.wait_ready()
            url = relay.base_url + "/v1/sources/hub/events"
            for round_no in range(rounds):
                stop = asyncio.Event()
                senders = asyncio.create_task(send_until(url, ledger, stop, prefix=f"r{round_no}", senders=8))
                await until_len(ledger.acked, len(ledger.acked) + 100, timeout=30)

                locker = await asyncio.to_thread(Locker, tmp_path / "relay.db")
                refused_before = len(ledger.refused)
                try:
                    # While the lock is held, a new event gets a prompt 503 (busy_timeout 1 s), not a hang.
                    async with aiohttp.ClientSession() as session:
                        started = time.monotonic()
                        probe = Ledger()
                        status = await post_event(session, url, f"probe-{round_no}", probe)
                        elapsed = time.monotonic() - started
                    assert status == 503, probe.unexpected
                    assert elapsed < 8, f"the locked store answered after {elapsed:.1f}s"
                    ledger.refused.extend(probe.refused)
                    await until_len(ledger.refused, refused_before + 20, timeout=30)
                finally:
                    await asyncio.to_thread(locker.release)

                # Lock gone: the senders (still running) get 202s again.
                acked_at_release = len(ledger.acked)
                await until_len(ledger.acked, acked_at_release + 100, timeout=30)
                stop.set()
                await senders

            # Every refused event, sent again, is taken; everything acknowledged is delivered.
            retry = Ledger()
            async with aiohttp.ClientSession() as session:
                for event_id in ledger.refused:
                    assert await post_event(session, url, event_id, retry) in (200, 202), retry.unexpected
            ledger.acked.extend(retry.acked)
            await until(lambda: set(ledger.acked) <= set(subscriber.delivered_ids()), timeout=60)
            assert "database is locked" in relay.log_text()
            relay.signal(signal.SIGTERM)
            assert await asyncio.to_thread(relay.wait, 30.0) == 0
        assert_nothing_acknowledged_lost(ledger, stored_event_ids(config_path))
    finally:
        await subscriber.stop()

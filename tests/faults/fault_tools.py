"""What the fault tests share: senders that remember every answer, and reading back what the store holds."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from helpers import HUB_TOKEN, run_cli, sample_event, until

HEADERS = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}


@dataclass
class Ledger:
    """Every event id sent, by the answer it got. `acked` is what the relay promised to keep."""

    acked: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # 503: the sender must retry
    lost_connection: list[str] = field(default_factory=list)  # no answer: unknown, the sender must retry
    statuses: Counter[int] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)

    def record(self, event_id: str, status: int, body: str) -> None:
        self.statuses[status] += 1
        if status == 202:
            self.acked.append(event_id)
        elif status == 503:
            self.refused.append(event_id)
        elif status != 200:  # 200 = a duplicate of an acknowledged event: fine after a retry
            self.unexpected.append(f"{event_id}: {status} {body[:200]}")


async def post_event(
    session: aiohttp.ClientSession,
    url: str,
    event_id: str,
    ledger: Ledger,
    *,
    version: str | None = None,
    **data: object,
) -> int:
    """POST one order event (`version`: its timestamp, the order of its key's versions); record the answer.
    Returns the status, or 0 when the connection failed."""
    event = sample_event("order/synced", event_id, **data)
    if version is not None:
        event["timestamp"] = version
    try:
        async with session.post(url, data=orjson.dumps(event), headers=HEADERS) as r:
            ledger.record(event_id, r.status, await r.text())
            return r.status
    except (TimeoutError, aiohttp.ClientError):
        ledger.lost_connection.append(event_id)
        return 0


async def send_until(
    url: str, ledger: Ledger, stop: asyncio.Event, *, prefix: str, senders: int = 16, keys: int = 0
) -> None:
    """`senders` concurrent loops posting unique ids until `stop` is set; `keys` > 0 spreads orders over keys."""

    async def loop(session: aiohttp.ClientSession, worker: int) -> None:
        n = 0
        while not stop.is_set():
            event_id = f"{prefix}-{worker}-{n}"
            data = {"orderNumber": f"SO-{n % keys}"} if keys else {}
            if await post_event(session, url, event_id, ledger, **data) == 0:
                await asyncio.sleep(0.02)  # the relay is gone: back off before the next try
            n += 1

    connector = aiohttp.TCPConnector(limit=senders)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15)) as session:
        await asyncio.gather(*(loop(session, w) for w in range(senders)))


def stored_event_ids(config_path: Path) -> list[str]:
    """Every event id in the store, as `relay events list` shows it (duplicates would show twice)."""
    listed = run_cli("events", "list", "-c", str(config_path), "--json", "--limit", "10000000", timeout=120)
    assert listed.returncode == 0, listed.stderr
    return [e["eventId"] for e in json.loads(listed.stdout)]


def assert_nothing_acknowledged_lost(ledger: Ledger, stored: list[str]) -> None:
    assert not ledger.unexpected, ledger.unexpected[:5]
    assert len(stored) == len(set(stored)), "an event is stored twice"
    missing = set(ledger.acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"


async def until_len(items: list[str], count: int, timeout: float) -> None:
    """Wait until `items` (a ledger list that senders append to) holds at least `count` entries."""
    await until(lambda: len(items) >= count, timeout=timeout)

"""Fill a relay store with events (and optionally their deliveries) through the store's own API.

    python -m bench.preload '{"db": "/tmp/x/relay.db", "events": 1000000, "subscribers": []}'
    python -m bench.preload '{"url": "postgresql://postgres@127.0.0.1:5432/db", "events": 20000, "subscribers": ["s1"]}'

Loading a million events over HTTP would take minutes, so this helper calls `relay.store.create_store(url)`
and `store.ingest([NewEvent, ...])` in batches of `batch` events: the same SQL, migrations and rows that
`relay serve` writes, minus HTTP and validation. Event `i` is received at `received_from + i * step_us`, so a
replay can select the last N events with `--since`. Prints one JSON line with the count and the rate.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.common import ORDER_KEYS, event_body
from relay.events import Event, utc_text
from relay.store import DeliveryPlan, NewEvent, create_store


@dataclass
class PreloadSpec:
    events: int
    db: str = ""  # an SQLite file
    url: str | None = None  # or any store URL (PostgreSQL)
    subscribers: list[str] = field(default_factory=list)
    batch: int = 5000
    received_from: str | None = None  # ISO 8601; default: now minus one microsecond per event
    step_us: int = 1
    id_prefix: str = "pre"
    synchronous: str = "NORMAL"


def received_at(spec: PreloadSpec, start: datetime, index: int) -> datetime:
    return start + timedelta(microseconds=index * spec.step_us)


def start_of(spec: PreloadSpec) -> datetime:
    if spec.received_from is not None:
        return datetime.fromisoformat(spec.received_from.replace("Z", "+00:00"))
    return datetime.now(UTC) - timedelta(microseconds=spec.events * spec.step_us + 1_000_000)


def _batch(spec: PreloadSpec, start: datetime, first: int, last: int) -> list[NewEvent]:
    plans = tuple(DeliveryPlan(s) for s in spec.subscribers)
    occurred = datetime(2026, 11, 20, 9, 41, 56, tzinfo=UTC)
    items = []
    for i in range(first, last):
        event_id = f"{spec.id_prefix}-{i}"
        event = Event(
            event_id=event_id,
            channel="order/synced",
            source="hub",
            tenant_id="HALLORAN",
            entity_key=f"SO-{i % ORDER_KEYS}",
            version="2026-11-20T09:41:56Z",
            occurred_at=occurred,
            received_at=received_at(spec, start, i),
            payload=event_body(event_id, i),
        )
        items.append(NewEvent(event, plans))
    return items


async def preload(spec: PreloadSpec) -> dict[str, Any]:
    url = spec.url or f"sqlite://{spec.db}"
    store = create_store(url, synchronous="FULL" if spec.synchronous == "FULL" else "NORMAL")
    await store.open()
    start = start_of(spec)
    began = time.perf_counter()
    accepted = 0
    pending: asyncio.Task[Any] | None = None
    try:
        for first in range(0, spec.events, spec.batch):
            items = _batch(spec, start, first, min(spec.events, first + spec.batch))
            if pending is not None:  # build the next batch while the previous one commits
                accepted += sum(o.status == "accepted" for o in await pending)
            pending = asyncio.create_task(store.ingest(items))
        if pending is not None:
            accepted += sum(o.status == "accepted" for o in await pending)
    finally:
        await store.close()
    seconds = time.perf_counter() - began
    return {
        "events": accepted,
        "deliveries": accepted * len(spec.subscribers),
        "seconds": round(seconds, 2),
        "events_per_s": round(accepted / seconds, 1) if seconds else 0.0,
        "received_from": utc_text(start),
        "db_mib": None if spec.url else round(sum(p.stat().st_size for p in _files(spec.db)) / 2**20, 1),
    }


def _files(db: str) -> list[Path]:
    """An SQLite database's file and its -wal and -shm files."""
    return list(Path(db).parent.glob(Path(db).name + "*"))


def main() -> None:
    from relay.logs import configure_logging

    configure_logging("warning", "console", stream=sys.stderr)  # stdout carries the JSON result
    spec = PreloadSpec(**orjson.loads(sys.argv[1]))
    sys.stdout.write(orjson.dumps(asyncio.run(preload(spec))).decode() + "\n")


if __name__ == "__main__":
    main()

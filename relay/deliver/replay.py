"""Replay: new deliveries (flagged replay) for stored events, routed by today's subscriber config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from relay.routing import Router
from relay.store import EventFilter, Store
from relay.store.base import ReplayEvent

__all__ = ["ReplayResult", "replay"]

PAGE_SIZE = 2000


@dataclass(frozen=True, slots=True)
class ReplayResult:
    events_matched: int
    deliveries: int
    dry_run: bool


async def replay(
    store: Store,
    router: Router,
    flt: EventFilter,
    *,
    event_id: str | None = None,
    subscriber: str | None = None,
    dry_run: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Create one replay delivery per matching (event, subscriber); `dry_run` only counts.

    Args:
        store: the open store.
        router: today's subscribers (channel globs and filters decide who gets what).
        flt: channel, entity key and received-at window (its `limit` is ignored).
        event_id: only this event.
        subscriber: only this subscriber.
        dry_run: count, create nothing.
        on_progress: called with (events done, events total) after each page.
    """
    total = await store.count_matching_events(flt, event_id=event_id)
    done = 0
    deliveries = 0
    after_seq = 0
    while True:
        page = await store.events_page(flt, event_id=event_id, after_seq=after_seq, limit=PAGE_SIZE)
        if not page:
            break
        rows: list[tuple[ReplayEvent, str]] = []
        for ev in page:
            payload = orjson.loads(ev.payload)
            rows.extend((ev, name) for name in router.subscribers_for(ev.channel, payload, only=subscriber))
        if rows and not dry_run:
            await store.insert_replay_deliveries(rows)
        deliveries += len(rows)
        done += len(page)
        after_seq = page[-1].seq
        if on_progress is not None:
            on_progress(done, total)
    return ReplayResult(events_matched=done, deliveries=deliveries, dry_run=dry_run)

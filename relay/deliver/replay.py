"""Replay: new deliveries (flagged replay) for stored events, routed by today's subscriber config."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from relay.routing import ChannelMatcher, Router, is_channel_glob
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
        flt: channel (an exact name or a glob such as `order/*`), source, entity key and received-at window
            (its `limit` and `newest_first` are ignored: events are replayed in arrival order).
        event_id: only this event.
        subscriber: only this subscriber.
        dry_run: count, create nothing.
        on_progress: called with (events done, events total) after each page.
    """
    matcher: ChannelMatcher | None = None
    if flt.channel is not None and is_channel_glob(flt.channel):
        # The store filters exact names only; a glob reads every channel and keeps the ones it matches.
        matcher = ChannelMatcher([flt.channel])
        flt = dataclasses.replace(flt, channel=None)
    total = await store.count_matching_events(flt, event_id=event_id)
    scanned = 0
    matched = 0
    deliveries = 0
    after_seq = 0
    while True:
        page = await store.events_page(flt, event_id=event_id, after_seq=after_seq, limit=PAGE_SIZE)
        if not page:
            break
        after_seq = page[-1].seq
        scanned += len(page)
        if matcher is not None:
            page = [ev for ev in page if matcher.matches(ev.channel)]
        matched += len(page)
        rows: list[tuple[ReplayEvent, str]] = []
        for ev in page:
            payload = orjson.loads(ev.payload)
            rows.extend((ev, name) for name in router.subscribers_for(ev.channel, payload, only=subscriber))
        if rows and not dry_run:
            await store.insert_replay_deliveries(rows)
        deliveries += len(rows)
        if on_progress is not None:
            on_progress(scanned, total)
    return ReplayResult(events_matched=matched, deliveries=deliveries, dry_run=dry_run)

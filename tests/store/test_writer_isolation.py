"""The store's side of "one bad event never hurts another": a request that fails inside the group commit fails
alone, and no character in an id can defeat deduplication."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from relay.events import Event
from relay.store import Checkpoint, DeliveryPlan, NewEvent, PollCommit, Store, StoreUnavailable, create_store

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    store = create_store(f"sqlite://{tmp_path / 'isolation.db'}")
    await store.open()
    yield store
    await store.close()


def event(event_id: str, **over: object) -> Event:
    base = Event(
        event_id=event_id,
        channel="order/synced",
        source="hub",
        tenant_id="T",
        entity_key=f"SO-{event_id}",
        version="1",
        occurred_at=NOW,
        received_at=NOW,
        payload=b'{"eventId":"' + event_id.encode() + b'"}',
    )
    return dataclasses.replace(base, **over)  # type: ignore[arg-type]


# Built directly, past every ingest check: each breaks the transaction in its own way.
POISONS = {
    # A column the schema requires: the insert fails with a constraint violation.
    "not-null": event("poison", channel=None),
    # An instant that cannot be written as UTC text: fails while the rows are prepared.
    "overflow": event("poison", occurred_at=datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))),
    # A version that reads as such an instant (the version order is derived in the writer).
    "version": event("poison", version="0001-01-01T00:30:00+01:00"),
}


@pytest.mark.parametrize("poison", list(POISONS), ids=list(POISONS))
async def test_a_request_that_fails_in_the_batch_fails_alone(backend: Store, poison: str) -> None:
    goods = [NewEvent(event(f"good-{i}"), [DeliveryPlan("s1")]) for i in range(20)]
    bad = NewEvent(POISONS[poison], [DeliveryPlan("s1")])
    results = await asyncio.gather(
        *(backend.ingest([g]) for g in goods[:10]),
        backend.ingest([bad]),
        *(backend.ingest([g]) for g in goods[10:]),
        return_exceptions=True,
    )
    good_results = results[:10] + results[11:]
    assert [r[0].status for r in good_results if isinstance(r, list)] == ["accepted"] * 20
    if poison == "version":
        # An unreadable version is ordered as text; it never fails the writer.
        assert isinstance(results[10], list)
    else:
        assert isinstance(results[10], StoreUnavailable)
        assert await backend.get_event("poison") is None
    assert await backend.count_events() == 20 + (poison == "version")
    # The writer is healthy afterwards: the same poison fails again alone, a new event is accepted.
    if poison != "version":
        with pytest.raises(StoreUnavailable):
            await backend.ingest([bad])
    assert [o.status for o in await backend.ingest([NewEvent(event("after"))])] == ["accepted"]


async def test_a_failing_request_takes_none_of_its_own_events_in(backend: Store) -> None:
    mixed = [NewEvent(event("first-of-doc")), NewEvent(POISONS["not-null"])]
    other = backend.ingest([NewEvent(event("other"))])
    results = await asyncio.gather(backend.ingest(mixed), other, return_exceptions=True)
    assert isinstance(results[0], StoreUnavailable)
    assert [o.status for o in results[1]] == ["accepted"]  # type: ignore[union-attr]
    assert await backend.get_event("first-of-doc") is None  # one request commits whole or not at all


@pytest.mark.parametrize("event_id", ["nul\u0000id", "\u0000", 'quote"id', "back\\slash", "é", "\u2028"])
async def test_dedup_cannot_be_defeated_by_any_character(backend: Store, event_id: str) -> None:
    first = await backend.ingest([NewEvent(event(event_id))])
    assert [o.status for o in first] == ["accepted"]
    again = await asyncio.gather(
        backend.ingest([NewEvent(event(event_id))]), backend.ingest([NewEvent(event("neighbour"))])
    )
    assert [[o.status for o in r] for r in again] == [["duplicate"], ["accepted"]]


async def test_dedup_of_a_batch_larger_than_one_statement(backend: Store) -> None:
    ids = [f"bulk-{i}" for i in range(1300)]
    await backend.ingest([NewEvent(event(i)) for i in ids[::2]])
    out = await backend.ingest([NewEvent(event(i)) for i in ids])
    assert [o.status for o in out] == ["duplicate" if n % 2 == 0 else "accepted" for n in range(1300)]


async def test_record_hashes_find_keys_with_any_character(backend: Store) -> None:
    keys = ["nul\u0000key", "plain", *(f"k{i}" for i in range(600))]
    hashes = [(k, f"h-{n}") for n, k in enumerate(keys)]
    await backend.commit_poll(PollCommit("x3", "BPCUSTOMER", [], hashes, Checkpoint()))
    assert await backend.record_hashes("x3", "BPCUSTOMER", keys) == dict(hashes)

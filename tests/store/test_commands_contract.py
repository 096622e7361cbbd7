"""The store contract for write-back commands: idempotent submit, leased claims in per-key order, and the
outcome event committed with the outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.events import Event
from relay.store import CommandFilter, DeliveryPlan, EventFilter, NewCommand, NewEvent, Store, create_store

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "postgres":
        backend = create_store(request.getfixturevalue("postgres_url"))
    else:
        backend = create_store(f"sqlite://{tmp_path / 'commands.db'}")
    await backend.open()
    yield backend
    await backend.close()


def command(cid: str, key: str = "k1", *, customer: str = "C1", body: bytes = b"{}", now: datetime = NOW) -> NewCommand:
    return NewCommand(
        id=cid,
        source="aldgate-x3",
        command="order/create",
        idempotency_key=key,
        body_hash="h-" + body.decode(),
        body=body,
        order_key=customer,
        reference="Q-1",
        now=now,
    )


def outcome_event(event_id: str) -> NewEvent:
    event = Event(event_id, "order/created", "aldgate-x3", None, "SO1", None, NOW, NOW, b'{"eventId":"x"}')
    return NewEvent(event, [DeliveryPlan("quotes")])


async def test_the_same_key_is_stored_once_even_when_submitted_concurrently(store: Store) -> None:
    results = await asyncio.gather(*(store.submit_command(command(f"cmd{i}")) for i in range(20)))
    assert sum(created for _, created in results) == 1
    assert len({row.id for row, _ in results}) == 1
    assert len(await store.list_commands(CommandFilter())) == 1


async def test_claims_keep_per_key_order_and_take_over_an_expired_lease(store: Store) -> None:
    await store.submit_command(command("a", "k1", customer="C1"))
    await store.submit_command(command("b", "k2", customer="C1"))
    await store.submit_command(command("c", "k3", customer="C2"))
    lease = NOW + timedelta(seconds=30)
    first = await store.claim_commands("w1", "aldgate-x3", now=NOW, lease_until=lease, limit=10)
    assert [c.id for c in first] == ["a", "c"]  # b waits for a: same customer
    assert all(c.status == "running" and c.attempts == 1 for c in first)
    assert await store.claim_commands("w2", "aldgate-x3", now=NOW, lease_until=lease, limit=10) == []
    # w1 dies: once its lease ran out, another executor takes a over (a second attempt).
    later = lease + timedelta(seconds=1)
    again = await store.claim_commands(
        "w2", "aldgate-x3", now=later, lease_until=later + timedelta(seconds=30), limit=1
    )
    assert [(c.id, c.attempts) for c in again] == [("a", 2)]
    # The old owner's late finish is refused; the new owner's is taken, with its event.
    assert not await store.finish_command(
        "a", "w1", status="succeeded", result={}, error=None, now=later, event=outcome_event("e0")
    )
    assert await store.finish_command(
        "a",
        "w2",
        status="succeeded",
        result={"documentNumber": "SO1"},
        error=None,
        now=later,
        event=outcome_event("e1"),
    )
    assert [e.event_id for e in await store.list_events(EventFilter())] == ["e1"]
    row = await store.get_command("a")
    assert row is not None
    assert row.status == "succeeded"
    assert row.result == {"documentNumber": "SO1"}
    nxt = await store.claim_commands("w2", "aldgate-x3", now=later, lease_until=later + timedelta(seconds=30), limit=10)
    assert [c.id for c in nxt] == ["b", "c"]  # c: w1's lease on it ran out too


async def test_reschedule_failed_retry_and_release(store: Store) -> None:
    await store.submit_command(command("a"))
    lease = NOW + timedelta(seconds=30)
    (claimed,) = await store.claim_commands("w1", "aldgate-x3", now=NOW, lease_until=lease, limit=1)
    retry_at = NOW + timedelta(seconds=10)
    assert await store.reschedule_command("a", "w1", next_attempt_at=retry_at, error={"code": "timeout"})
    assert await store.claim_commands("w1", "aldgate-x3", now=NOW, lease_until=lease, limit=1) == []
    (claimed,) = await store.claim_commands("w1", "aldgate-x3", now=retry_at, lease_until=lease, limit=1)
    assert claimed.attempts == 2
    assert claimed.error == {"code": "timeout"}
    assert await store.release_command_leases("w1") == 1
    (claimed,) = await store.claim_commands("w1", "aldgate-x3", now=retry_at, lease_until=lease, limit=1)
    assert await store.finish_command(
        "a", "w1", status="failed", result=None, error={"code": "erp_refused"}, now=retry_at, event=None
    )
    assert await store.open_command_counts() == {}
    later = NOW + timedelta(hours=1)
    assert await store.retry_command("a", later)
    assert not await store.retry_command("a", later)  # no longer failed
    row = await store.get_command("a")
    assert row is not None
    assert row.status == "accepted"
    assert row.window_start_at == later
    assert row.created_at == NOW
    assert await store.open_command_counts() == {("aldgate-x3", "order/create"): 1}


async def test_a_renewed_lease_keeps_the_command_and_only_its_holder_renews(store: Store) -> None:
    await store.submit_command(command("a", "k1", customer="C1"))
    await store.submit_command(command("b", "k2", customer="C2"))
    await store.submit_command(command("c", "k3", customer="C3"))
    lease = NOW + timedelta(seconds=30)
    claimed = await store.claim_commands("w1", "aldgate-x3", now=NOW, lease_until=lease, limit=2)
    assert [c.id for c in claimed] == ["a", "b"]
    assert await store.finish_command(
        "b", "w1", status="succeeded", result={}, error=None, now=NOW, event=outcome_event("e-b")
    )
    # a is renewed; b is finished (no lease left); c was never claimed; another owner renews nothing.
    renewed_to = NOW + timedelta(seconds=60)
    assert await store.renew_command_leases("w1", ["a", "b", "c", "missing"], renewed_to) == {"a"}
    assert await store.renew_command_leases("w2", ["a"], renewed_to + timedelta(seconds=60)) == set()
    assert await store.renew_command_leases("w1", [], renewed_to) == set()
    # Past the first lease, a is still held: no one else can take it over.
    past_first = lease + timedelta(seconds=1)
    taken = await store.claim_commands(
        "w2", "aldgate-x3", now=past_first, lease_until=past_first + timedelta(hours=1), limit=10
    )
    assert [c.id for c in taken] == ["c"]
    # Past the renewed lease, it is taken over, and the old holder can neither renew nor finish it.
    past_renewed = renewed_to + timedelta(seconds=1)
    (again,) = await store.claim_commands(
        "w2", "aldgate-x3", now=past_renewed, lease_until=past_renewed + timedelta(seconds=30), limit=10
    )
    assert (again.id, again.attempts) == ("a", 2)
    assert await store.renew_command_leases("w1", ["a"], past_renewed + timedelta(seconds=60)) == set()
    assert not await store.finish_command(
        "a", "w1", status="succeeded", result={}, error=None, now=past_renewed, event=outcome_event("e-a")
    )


async def test_renewing_many_commands_at_once(store: Store) -> None:
    count = 600  # more than one statement's worth of ids on SQLite (512)
    await asyncio.gather(
        *(store.submit_command(command(f"m{n:03d}", f"key-{n}", customer=f"C{n}")) for n in range(count))
    )
    lease = NOW + timedelta(seconds=5)
    claimed = await store.claim_commands("w1", "aldgate-x3", now=NOW, lease_until=lease, limit=count)
    assert len(claimed) == count
    ids = [c.id for c in claimed]
    assert await store.renew_command_leases("w1", ids, NOW + timedelta(seconds=60)) == set(ids)

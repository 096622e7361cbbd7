"""The store contract, written once and run against every backend: SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from helpers import completion
from prometheus_client import REGISTRY

from relay.config import RuleConfig
from relay.events import Event
from relay.rules import RuleEngine
from relay.spec import builtin_spec_paths, load_specs
from relay.store import (
    Checkpoint,
    ClaimRequest,
    ConfirmEntry,
    DeliveryFilter,
    DeliveryPlan,
    EventFilter,
    NewEvent,
    PollCommit,
    QuarantineEntry,
    Store,
    create_store,
)
from relay.store._sql import migrations

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "postgres":
        store = create_store(request.getfixturevalue("postgres_url"))
    else:
        store = create_store(f"sqlite://{tmp_path / 'contract.db'}")
    await store.open()
    yield store
    await store.close()


def event(event_id: str, *, key: str | None = "SO-1", version: str = "1", received: datetime = NOW) -> Event:
    return Event(
        event_id=event_id,
        channel="order/synced",
        source="hub",
        tenant_id="T",
        entity_key=key,
        version=version,
        occurred_at=received,
        received_at=received,
        payload=b'{"eventId":"' + event_id.encode() + b'"}',
    )


async def test_migrations_are_recorded(backend: Store) -> None:
    # Each backend numbers its own migrations; every one of them is applied on open.
    assert await backend.schema_version() == migrations(backend.dialect)[-1].version


async def test_ingest_dedups_and_creates_deliveries_atomically(backend: Store) -> None:
    out = await backend.ingest([NewEvent(event("a"), [DeliveryPlan("s1"), DeliveryPlan("s2")])])
    assert [(o.status, o.deliveries) for o in out] == [("accepted", 2)]
    again = await backend.ingest([NewEvent(event("a"), [DeliveryPlan("s1")])])
    assert [o.status for o in again] == ["duplicate"]
    assert len(await backend.list_deliveries(DeliveryFilter(event_id="a"))) == 2
    assert (await backend.get_event("a")) == event("a")


async def test_concurrent_ingest_of_one_id_accepts_once(backend: Store) -> None:
    results = await asyncio.gather(*(backend.ingest([NewEvent(event("same"))]) for _ in range(40)))
    assert sum(r[0].status == "accepted" for r in results) == 1
    assert await backend.count_events() == 1


async def test_two_owners_never_claim_the_same_delivery(backend: Store) -> None:
    await backend.ingest([NewEvent(event(f"e{i}", key=None), [DeliveryPlan("s")]) for i in range(50)])
    now = datetime.now(UTC)
    first, second = await asyncio.gather(
        backend.claim_deliveries("a", now, [ClaimRequest("s", 30, False, now + timedelta(minutes=1))]),
        backend.claim_deliveries("b", now, [ClaimRequest("s", 30, False, now + timedelta(minutes=1))]),
    )
    assert len(first) + len(second) == 50
    assert not {d.id for d in first} & {d.id for d in second}
    # Leases hold until they expire, then the deliveries can be claimed again.
    assert await backend.claim_deliveries("c", now, [ClaimRequest("s", 100, False, now)]) == []
    later = now + timedelta(minutes=2)
    assert len(await backend.claim_deliveries("c", later, [ClaimRequest("s", 100, False, later)])) == 50


async def test_per_key_claims_only_the_head_of_each_key(backend: Store) -> None:
    await backend.ingest(
        [
            NewEvent(event("k1-v2", key="K1", version="2"), [DeliveryPlan("s")]),
            NewEvent(event("k1-v1", key="K1", version="1"), [DeliveryPlan("s")]),
            NewEvent(event("k2-v1", key="K2", version="1"), [DeliveryPlan("s")]),
        ]
    )
    now = datetime.now(UTC)
    claimed = await backend.claim_deliveries("o", now, [ClaimRequest("s", 10, True, now + timedelta(minutes=1))])
    assert sorted(d.event_id for d in claimed) == ["k1-v1", "k2-v1"]
    assert await backend.claim_deliveries("o", now, [ClaimRequest("s", 10, True, now + timedelta(minutes=1))]) == []


async def test_completion_records_attempt_and_stales_older_versions(backend: Store) -> None:
    await backend.ingest([NewEvent(event("v2", version="2"), [DeliveryPlan("s", check_stale=True)])])
    now = datetime.now(UTC)
    (d,) = await backend.claim_deliveries("o", now, [ClaimRequest("s", 10, True, now + timedelta(minutes=1))])
    await backend.complete_deliveries(
        [
            completion(
                d.id,
                duration_ms=3.0,
                response_excerpt=b"ok",
                entity_key="SO-1",
                version_order=d.version_order,
                track_key=True,
                mark_older_stale=True,
            )
        ]
    )
    (row,) = await backend.list_deliveries(DeliveryFilter(event_id="v2"))
    assert (row.state, row.attempts, row.last_status) == ("delivered", 1, 200)
    assert (await backend.list_attempts(row.id))[0]["response"] == "ok"
    await backend.ingest([NewEvent(event("v1", version="1"), [DeliveryPlan("s", check_stale=True)])])
    (old,) = await backend.list_deliveries(DeliveryFilter(event_id="v1"))
    assert old.state == "stale"
    assert (await backend.subscriber_states())["s"].last_success_at is not None


async def test_completion_by_a_lost_lease_changes_nothing(backend: Store) -> None:
    await backend.ingest([NewEvent(event("x", key=None), [DeliveryPlan("s")])])
    now = datetime.now(UTC)
    (d,) = await backend.claim_deliveries("owner-1", now, [ClaimRequest("s", 1, False, now + timedelta(minutes=1))])
    await backend.complete_deliveries([completion(d.id, "someone-else")])
    (row,) = await backend.list_deliveries(DeliveryFilter(event_id="x"))
    assert row.state == "pending"


async def test_renewed_leases_hold_past_their_first_expiry_and_only_for_their_holder(backend: Store) -> None:
    await backend.ingest([NewEvent(event(f"r{i}", key=None), [DeliveryPlan("s")]) for i in range(3)])
    now = datetime.now(UTC)
    lease = [ClaimRequest("s", 3, False, now + timedelta(seconds=10))]
    claimed = await backend.claim_deliveries("holder", now, lease)
    assert len(claimed) == 3
    in_flight, finished, also_in_flight = claimed
    pairs = [(d.id, d.lease_token) for d in claimed]
    await backend.complete_deliveries([completion(finished.id, "holder", lease_token=finished.lease_token)])
    # Someone else renewing changes nothing; the holder renews what it still holds and is still pending.
    assert await backend.renew_leases("someone-else", pairs, now + timedelta(minutes=5)) == set()
    assert await backend.renew_leases("holder", pairs, now + timedelta(minutes=5)) == {in_flight.id, also_in_flight.id}
    # Past the first expiry the renewed leases still hold: nothing is claimable.
    later = now + timedelta(minutes=1)
    assert await backend.claim_deliveries("other", later, [ClaimRequest("s", 10, False, later)]) == []
    # Past the renewed expiry they are claimed again; the old holder's renewals no longer take.
    much_later = now + timedelta(minutes=6)
    retaken = await backend.claim_deliveries(
        "other", much_later, [ClaimRequest("s", 10, False, much_later + timedelta(minutes=1))]
    )
    assert sorted(d.id for d in retaken) == sorted([in_flight.id, also_in_flight.id])
    assert await backend.renew_leases("holder", pairs, much_later + timedelta(minutes=5)) == set()
    assert await backend.renew_leases("holder", [], much_later) == set()


async def test_shift_schedule_moves_future_retries_and_leases(backend: Store) -> None:
    await backend.ingest([NewEvent(event(i, key=None), [DeliveryPlan("s")]) for i in ("a", "b")])
    now = datetime.now(UTC)
    claimed = await backend.claim_deliveries("owner-1", now, [ClaimRequest("s", 2, False, now + timedelta(minutes=1))])
    b = next(d for d in claimed if d.event_id == "b")
    retry = completion(
        b.id, "owner-1", status=500, error="HTTP 500", state="pending", next_attempt_at=now + timedelta(minutes=30)
    )
    await backend.complete_deliveries([retry])
    # a is leased for a minute, b waits 30 minutes: nothing to claim now.
    assert await backend.claim_deliveries("owner-2", now, [ClaimRequest("s", 2, False, now)]) == []
    assert await backend.shift_schedule(now + timedelta(hours=2), -3600) == 0
    # The clock stepped back an hour: both times move with it, so both are due at the new clock's now.
    assert await backend.shift_schedule(now, -3600) == 2
    again = await backend.claim_deliveries("owner-2", now, [ClaimRequest("s", 2, False, now + timedelta(minutes=1))])
    assert sorted(d.event_id for d in again) == ["a", "b"]


async def test_oldest_pending_counts_leased_deliveries_and_skips_finished_ones(backend: Store) -> None:
    ten_ago, five_ago = NOW - timedelta(minutes=10), NOW - timedelta(minutes=5)
    await backend.ingest(
        [
            NewEvent(event("old", key=None, received=ten_ago), [DeliveryPlan("s1"), DeliveryPlan("s2")]),
            NewEvent(event("new", key=None, received=five_ago), [DeliveryPlan("s1")]),
        ]
    )
    assert await backend.oldest_pending_at(["s1", "s2", "s3"]) == {"s1": ten_ago, "s2": ten_ago}
    now = datetime.now(UTC)
    claimed = await backend.claim_deliveries("o", now, [ClaimRequest("s1", 10, False, now + timedelta(minutes=1))])
    (first,) = [d for d in claimed if d.event_id == "old"]
    await backend.complete_deliveries([completion(first.id, subscriber="s1")])
    # "new" is leased (in flight), still pending; "old" is delivered.
    assert await backend.oldest_pending_at(["s1", "s2"]) == {"s1": five_ago, "s2": ten_ago}
    assert await backend.oldest_pending_at([]) == {}


async def test_redrive_and_replay(backend: Store) -> None:
    await backend.ingest([NewEvent(event("d", key=None), [DeliveryPlan("s")])])
    now = datetime.now(UTC)
    (d,) = await backend.claim_deliveries("o", now, [ClaimRequest("s", 1, False, now + timedelta(minutes=1))])
    await backend.complete_deliveries(
        [completion(d.id, attempt=8, status=500, error="HTTP 500 after 8 attempts", state="dead")]
    )
    assert [r.event_id for r in await backend.list_deliveries(DeliveryFilter(state="dead"))] == ["d"]
    assert await backend.redrive(DeliveryFilter(subscriber="s")) == 1
    (row,) = await backend.list_deliveries(DeliveryFilter(event_id="d"))
    assert (row.state, row.attempts) == ("pending", 0)
    page = await backend.events_page(EventFilter(), event_id=None, after_seq=0, limit=10)
    assert await backend.insert_replay_deliveries([(page[0], "s2")]) == 1
    replayed = await backend.list_deliveries(DeliveryFilter(subscriber="s2"))
    assert replayed[0].replay


async def test_poll_commit_is_atomic_with_checkpoint_and_hashes(backend: Store) -> None:
    commit = PollCommit(
        "x3", "BPCUSTOMER", [NewEvent(event("p1"))], [("C1", "h1")], Checkpoint("2026-11-20T00:00:00Z", "k", {"a": 1})
    )
    assert [o.status for o in await backend.commit_poll(commit)] == ["accepted"]
    assert await backend.get_checkpoint("x3", "BPCUSTOMER") == Checkpoint("2026-11-20T00:00:00Z", "k", {"a": 1})
    assert await backend.record_hashes("x3", "BPCUSTOMER", ["C1", "C2"]) == {"C1": "h1"}
    await backend.commit_poll(PollCommit("x3", "BPCUSTOMER", [], [], Checkpoint(), forget_keys=["C1"]))
    assert await backend.known_record_keys("x3", "BPCUSTOMER") == set()


async def test_observations_are_saved_with_their_events_and_with_a_poll_page(backend: Store) -> None:
    assert await backend.get_observation("x3", "ITMMVT", "shape") is None
    drift = NewEvent(event("drift-1", key="x3|ITMMVT"), [DeliveryPlan("dashboard")])
    outcomes = await backend.commit_observation("x3", "ITMMVT", "health", {"state": "failing", "failures": 3}, [drift])
    assert [o.status for o in outcomes] == ["accepted"]
    assert await backend.get_observation("x3", "ITMMVT", "health") == {"state": "failing", "failures": 3}
    assert await backend.get_observation("x3", "ITMMVT", "shape") is None  # kinds are apart
    assert [o.status for o in await backend.commit_observation("x3", "ITMMVT", "health", {"state": "ok"}, [drift])] == [
        "duplicate"
    ]
    assert await backend.get_observation("x3", "ITMMVT", "health") == {"state": "ok"}
    page = PollCommit("x3", "ITMMVT", [NewEvent(event("p2"))], [], Checkpoint(), shape={"ITMREF": "string"})
    assert [o.status for o in await backend.commit_poll(page)] == ["accepted"]
    assert await backend.get_observation("x3", "ITMMVT", "shape") == {"ITMREF": "string"}
    await backend.commit_poll(PollCommit("x3", "ITMMVT", [], [], Checkpoint()))  # shape None: kept as it was
    assert await backend.get_observation("x3", "ITMMVT", "shape") == {"ITMREF": "string"}


async def test_quarantine_and_prune(backend: Store) -> None:
    qid = await backend.quarantine(QuarantineEntry("hub", "bad", b"{", NOW, details=[{"path": "$", "message": "x"}]))
    row = await backend.get_quarantine(qid)
    assert row is not None
    assert (row.body, row.details) == (b"{", [{"path": "$", "message": "x"}])
    await backend.ingest([NewEvent(event("old", received=NOW - timedelta(days=40)))])
    await backend.ingest([NewEvent(event("kept", received=NOW - timedelta(days=40)), [DeliveryPlan("s")])])
    await backend.ingest([NewEvent(event("new", received=NOW))])
    assert await backend.prune(NOW - timedelta(days=30)) == 1
    assert {e.event_id for e in await backend.list_events(EventFilter())} == {"kept", "new"}


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("relay_quarantine_dropped_total", {"reason": reason}) or 0.0


async def test_quarantine_stays_within_its_budget_dropping_the_oldest(backend: Store) -> None:
    backend.quarantine_max_bytes = 64 * 1024
    dropped_before = _dropped("budget")
    body = b"x" * 10_000
    ids = [await backend.quarantine(QuarantineEntry("hub", f"bad {i}", body, NOW)) for i in range(20)]
    rows = await backend.list_quarantine(limit=100)
    kept = [r.id for r in rows]
    assert sum(r.size for r in rows) <= 64 * 1024
    assert kept == sorted(ids[-len(kept) :], reverse=True), "the newest are kept, the oldest dropped"
    assert len(kept) == 6  # 6 × (10,000 body + reason + details) fit in 64 KiB, 7 do not
    assert _dropped("budget") - dropped_before == 20 - len(kept)
    assert REGISTRY.get_sample_value("relay_quarantine_bytes") == sum(
        10_000 + len(f"bad {i}") + len("[]") for i in range(14, 20)
    )


async def test_an_entry_larger_than_the_budget_is_kept_alone(backend: Store) -> None:
    backend.quarantine_max_bytes = 1024
    await backend.quarantine(QuarantineEntry("hub", "small", b"{", NOW))
    big = await backend.quarantine(QuarantineEntry("hub", "big", b"y" * 4096, NOW))
    assert [r.id for r in await backend.list_quarantine()] == [big]
    row = await backend.get_quarantine(big)
    assert row is not None
    assert row.body == b"y" * 4096


async def test_prune_quarantine_deletes_entries_older_than_the_cutoff(backend: Store) -> None:
    dropped_before = _dropped("retention")
    old = [await backend.quarantine(QuarantineEntry("hub", "old", b"{", NOW - timedelta(days=10))) for _ in range(3)]
    new = await backend.quarantine(QuarantineEntry("hub", "new", b"{", NOW))
    assert await backend.prune_quarantine(NOW - timedelta(days=7), limit=2) == 2
    assert await backend.prune_quarantine(NOW - timedelta(days=7), limit=2) == 1
    assert await backend.prune_quarantine(NOW - timedelta(days=7)) == 0
    assert [r.id for r in await backend.list_quarantine()] == [new]
    assert [await backend.get_quarantine(q) for q in old] == [None, None, None]
    assert _dropped("retention") - dropped_before == 3
    # What was pruned no longer counts against the budget.
    backend.quarantine_max_bytes = 2 * (1 + len("new") + len("[]"))
    second = await backend.quarantine(QuarantineEntry("hub", "new", b"{", NOW))
    assert [r.id for r in await backend.list_quarantine()] == [second, new]


async def test_events_list_newest_or_oldest_first_and_follow_a_cursor(backend: Store) -> None:
    assert await backend.last_event_seq() == 0
    await backend.ingest([NewEvent(event(name, key=name)) for name in ("a", "b", "c")])
    assert [e.event_id for e in await backend.list_events(EventFilter(newest_first=True))] == ["c", "b", "a"]
    assert [e.event_id for e in await backend.list_events(EventFilter(limit=2))] == ["a", "b"]
    rows = await backend.list_events_after(EventFilter(), after_seq=0)
    assert [e.event_id for _, e in rows] == ["a", "b", "c"]
    cursors = [seq for seq, _ in rows]
    assert cursors == sorted(cursors)
    assert cursors[-1] == await backend.last_event_seq()
    after_b = await backend.list_events_after(EventFilter(), after_seq=cursors[1])
    assert [e.event_id for _, e in after_b] == ["c"]
    await backend.ingest([NewEvent(event("d", key="d"))])
    newer = await backend.list_events_after(EventFilter(entity_key="d"), after_seq=cursors[-1])
    assert [e.event_id for _, e in newer] == ["d"]
    # A replay reads in arrival order whatever the list order, and a source narrows it.
    page = await backend.events_page(EventFilter(newest_first=True), event_id=None, after_seq=0, limit=10)
    assert [e.event_id for e in page] == ["a", "b", "c", "d"]
    assert await backend.count_matching_events(EventFilter(source="other"), event_id=None) == 0
    assert await backend.events_page(EventFilter(source="other"), event_id=None, after_seq=0, limit=10) == []


def confirm_entry(bod_id: str, source: str = "ion") -> ConfirmEntry:
    return ConfirmEntry(
        source=source, bod_id=bod_id, parameters='{"documentName":"Confirm.BOD"}', payload=b"<x/>", created_at=NOW
    )


async def test_confirm_outbox_is_bounded_per_source_and_sent_in_order(backend: Store) -> None:
    first = await backend.enqueue_confirm(confirm_entry("b1"), max_pending=2)
    second = await backend.enqueue_confirm(confirm_entry("b2"), max_pending=2)
    assert first is not None
    assert second is not None
    assert await backend.enqueue_confirm(confirm_entry("b3"), max_pending=2) is None  # full: not queued
    assert await backend.enqueue_confirm(confirm_entry("c1", source="other"), max_pending=2) is not None
    due = await backend.due_confirms(NOW, limit=10)
    assert [(r.bod_id, r.attempts, r.created_at) for r in due] == [("b1", 0, NOW), ("b2", 0, NOW), ("c1", 0, NOW)]
    assert due[0].payload == b"<x/>"
    assert await backend.next_confirm_at() == NOW


async def test_a_retried_confirm_waits_and_a_finished_one_is_gone(backend: Store) -> None:
    confirm_id = await backend.enqueue_confirm(confirm_entry("b1"), max_pending=10)
    assert confirm_id is not None
    later = NOW + timedelta(minutes=5)
    await backend.retry_confirm(confirm_id, attempts=1, next_attempt_at=later, error="HTTP 503")
    assert await backend.due_confirms(NOW, limit=10) == []
    assert await backend.next_confirm_at() == later
    (row,) = await backend.due_confirms(later, limit=10)
    assert (row.attempts, row.last_error) == (1, "HTTP 503")
    await backend.finish_confirm(confirm_id)
    assert await backend.due_confirms(later, limit=10) == []
    assert await backend.next_confirm_at() is None


def stock(event_id: str, part: str, version: int, available: int, *, channel: str = "inventory/synced") -> Event:
    stamp = f"2026-11-20T10:00:{version:02d}Z"
    payload = {"eventId": event_id, "data": {"partNumber": part, "warehouse": "MAIN", "available": available}}
    return Event(
        event_id=event_id,
        channel=channel,
        source="hub",
        tenant_id="T",
        entity_key=f"{part}|MAIN",
        version=stamp,
        occurred_at=NOW,
        received_at=NOW,
        payload=orjson.dumps(payload),
    )


async def test_current_state_keeps_the_highest_version_of_each_key(backend: Store) -> None:
    # Within one batch and across batches, out of order: the highest version wins, a tie keeps the first.
    await backend.ingest([NewEvent(stock("p1-v3", "P1", 3, 30)), NewEvent(stock("p1-v5", "P1", 5, 50))])
    await backend.ingest([NewEvent(stock("p1-v4", "P1", 4, 40)), NewEvent(stock("p2-v1", "P2", 1, 10))])
    await backend.ingest([NewEvent(stock("p1-v5-again", "P1", 5, 55))])
    await backend.ingest([NewEvent(stock("p2-gone", "P2", 2, 0, channel="inventory/deleted"))])
    # A derived alert is not a state of its key.
    await backend.ingest([NewEvent(stock("p3-alert", "P3", 9, 0, channel="inventory/low-stock"), track_state=False)])
    p1 = await backend.get_state("inventory", "P1|MAIN")
    assert p1 is not None
    assert (p1.event_id, p1.version, p1.deleted, p1.channel) == (
        "p1-v5",
        "2026-11-20T10:00:05Z",
        False,
        "inventory/synced",
    )
    assert orjson.loads(p1.payload)["data"]["available"] == 50
    assert p1.received_at == NOW
    p2 = await backend.get_state("inventory", "P2|MAIN")
    assert p2 is not None
    assert (p2.event_id, p2.deleted) == ("p2-gone", True)
    assert await backend.get_state("inventory", "P3|MAIN") is None
    assert await backend.get_state("order", "P1|MAIN") is None
    listed = await backend.list_state("inventory", prefix="P", limit=1)
    assert [r.entity_key for r in listed] == ["P1|MAIN"]
    after = await backend.list_state("inventory", prefix="P", after=listed[-1].entity_key)
    assert [r.entity_key for r in after] == ["P2|MAIN"]
    assert await backend.list_state("inventory", prefix="Q") == []


def _low_stock_rules() -> RuleEngine:
    rule = RuleConfig(
        name="low",
        on="inventory/synced",
        when="data.available <= 10",
        clear_when="data.available >= 20",
        emit="inventory/low-stock",
        emit_clear="inventory/stock-restored",
    )
    return RuleEngine([rule], load_specs(builtin_spec_paths()), lambda channel, payload: [DeliveryPlan("alerts")])


async def test_rules_derive_once_per_crossing_in_the_ingest_and_poll_transactions(backend: Store) -> None:
    backend.set_deriver(_low_stock_rules())
    await backend.ingest([NewEvent(stock("s1", "P1", 1, 50)), NewEvent(stock("s2", "P1", 2, 5))])
    await backend.ingest([NewEvent(stock("s3", "P1", 3, 4))])  # still low: nothing new
    # A redelivered trigger is a duplicate and derives nothing again.
    assert [o.status for o in await backend.ingest([NewEvent(stock("s2", "P1", 2, 5))])] == ["duplicate"]
    commit = PollCommit("x3", "ITMMVT", [NewEvent(stock("s4", "P1", 4, 25))], [], Checkpoint("h", None, {}))
    await backend.commit_poll(commit)
    derived = await backend.list_events(EventFilter(source="rule:low"))
    assert [(e.event_id, e.channel) for e in derived] == [
        ("low.s2", "inventory/low-stock"),
        ("low.s4", "inventory/stock-restored"),
    ]
    alerts = await backend.list_deliveries(DeliveryFilter(subscriber="alerts"))
    assert sorted(d.event_id for d in alerts) == ["low.s2", "low.s4"]
    # Alerts do not become the key's state; the newest stock level does.
    state = await backend.get_state("inventory", "P1|MAIN")
    assert state is not None
    assert state.event_id == "s4"
    # A late, older version does not move the rule.
    await backend.ingest([NewEvent(stock("s0", "P1", 0, 1))])
    assert len(await backend.list_events(EventFilter(source="rule:low"))) == 2


async def test_one_delivery_by_id_and_retry_now(backend: Store) -> None:
    await backend.ingest([NewEvent(event("a", key=None), [DeliveryPlan("s")])])
    (row,) = await backend.list_deliveries(DeliveryFilter(event_id="a"))
    assert await backend.get_delivery(row.id) == row
    assert await backend.get_delivery(row.id + 1000) is None
    assert await backend.oldest_pending_overall_at() == NOW
    assert not await backend.make_due_now(row.id)  # already due
    now = datetime.now(UTC)
    (d,) = await backend.claim_deliveries("o", now, [ClaimRequest("s", 1, False, now + timedelta(minutes=1))])
    later = now + timedelta(hours=1)
    await backend.complete_deliveries(
        [completion(d.id, status=503, error="HTTP 503", state="pending", next_attempt_at=later)]
    )
    assert await backend.next_due_at() == later
    assert await backend.make_due_now(row.id)
    due = await backend.next_due_at()
    assert due is not None
    assert due < later
    assert not await backend.make_due_now(row.id + 1000)

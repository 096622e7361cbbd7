"""What only a shared database needs: several relay processes (here: several stores) on one PostgreSQL database."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import helpers
import pytest
from helpers import completion

from relay.events import Event
from relay.store import (
    ClaimRequest,
    CommandRow,
    DeliveryFilter,
    DeliveryPlan,
    EventFilter,
    NewCommand,
    NewEvent,
    StoreUnavailable,
    create_store,
)
from relay.store._sql import migrations
from relay.store.postgres import PostgresStore, postgres_target

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
OpenStore = Callable[[], Awaitable[PostgresStore]]


def event(event_id: str, *, key: str | None = None, version: str = "1") -> Event:
    return Event(
        event_id=event_id,
        channel="order/synced",
        source="hub",
        tenant_id="T",
        entity_key=key,
        version=version,
        occurred_at=NOW,
        received_at=NOW,
        payload=b"{}",
    )


@pytest.fixture
async def open_store(postgres_url: str) -> AsyncIterator[OpenStore]:
    """Opens stores on the test's database (one per simulated relay instance) and closes them afterwards."""
    opened: list[PostgresStore] = []

    async def opener() -> PostgresStore:
        store = create_store(postgres_url)
        assert isinstance(store, PostgresStore)
        await store.open()
        opened.append(store)
        return store

    yield opener
    for store in opened:
        await store.close()


async def test_a_completion_from_an_expired_claim_is_fenced_off(open_store: OpenStore) -> None:
    store = await open_store()
    await store.ingest([NewEvent(event("x"), [DeliveryPlan("s")])])
    now = datetime.now(UTC)
    (first,) = await store.claim_deliveries("inst-a", now, [ClaimRequest("s", 1, False, now)])
    # The lease ran out (a paused process); the same instance, or another, claims the delivery again.
    later = now + timedelta(seconds=1)
    (second,) = await store.claim_deliveries("inst-a", later, [ClaimRequest("s", 1, False, later + timedelta(60))])
    assert first.id == second.id
    assert first.lease_token is not None
    assert second.lease_token is not None
    assert second.lease_token != first.lease_token
    # Renewing for the expired claim does not extend the claim that replaced it, though the owner matches.
    assert await store.renew_leases("inst-a", [(first.id, first.lease_token)], later + timedelta(hours=1)) == set()
    assert await store.renew_leases("inst-a", [(second.id, second.lease_token)], later + timedelta(hours=1)) == {
        second.id
    }
    # The late answer to the first claim changes nothing, though its owner matches.
    await store.complete_deliveries([completion(first.id, "inst-a", lease_token=first.lease_token, state="dead")])
    (row,) = await store.list_deliveries(DeliveryFilter(event_id="x"))
    assert row.state == "pending"
    await store.complete_deliveries([completion(second.id, "inst-a", lease_token=second.lease_token)])
    (row,) = await store.list_deliveries(DeliveryFilter(event_id="x"))
    assert row.state == "delivered"


async def test_per_key_order_holds_across_instances(open_store: OpenStore) -> None:
    instances = [await open_store() for _ in range(3)]
    keys, versions = 12, 6
    await instances[0].ingest(
        [
            NewEvent(event(f"k{k}-v{v}", key=f"K{k}", version=str(v)), [DeliveryPlan("s")])
            for v in range(1, versions + 1)
            for k in range(keys)
        ]
    )
    in_flight: dict[str, str] = {}
    delivered: dict[str, list[int]] = {}
    overlaps: list[str] = []

    async def work(store: PostgresStore, owner: str) -> None:
        while sum(len(v) for v in delivered.values()) < keys * versions:
            now = datetime.now(UTC)
            claimed = await store.claim_deliveries(owner, now, [ClaimRequest("s", 5, True, now + timedelta(60))])
            for d in claimed:
                assert d.entity_key is not None
                if d.entity_key in in_flight:
                    overlaps.append(f"{d.event_id} while {in_flight[d.entity_key]}")
                in_flight[d.entity_key] = d.event_id
            await asyncio.sleep(random.uniform(0, 0.003))  # the HTTP request: other instances claim meanwhile
            for d in claimed:
                assert d.entity_key is not None
                del in_flight[d.entity_key]
                delivered.setdefault(d.entity_key, []).append(int(d.event_id.rsplit("-v", 1)[1]))
            await store.complete_deliveries(
                [
                    completion(
                        d.id, owner, lease_token=d.lease_token, entity_key=d.entity_key, version_order=d.version_order
                    )
                    for d in claimed
                ]
            )
            if not claimed:
                await asyncio.sleep(0.001)

    await asyncio.wait_for(asyncio.gather(*(work(s, f"inst-{i}") for i, s in enumerate(instances))), 60)
    assert overlaps == []
    assert delivered == {f"K{k}": list(range(1, versions + 1)) for k in range(keys)}


async def test_instances_claiming_commands_at_once_never_share_one_and_keep_per_key_order(
    open_store: OpenStore,
) -> None:
    instances = [await open_store() for _ in range(3)]
    customers, per_customer = 8, 6
    for n in range(per_customer):  # interleaved submissions: each customer's commands are spread out
        for c in range(customers):
            await instances[n % 3].submit_command(
                NewCommand(
                    id=f"C{c}-{n}",
                    source="x3",
                    command="order/create",
                    idempotency_key=f"C{c}-{n}",
                    body_hash="h",
                    body=b"{}",
                    order_key=f"C{c}",
                    reference=None,
                    now=NOW,
                )
            )
    total = customers * per_customer
    claims: list[str] = []
    in_flight: dict[str, str] = {}
    finished: dict[str, list[int]] = {}
    overlaps: list[str] = []

    async def work(store: PostgresStore, owner: str) -> None:
        while sum(len(v) for v in finished.values()) < total:
            now = datetime.now(UTC)
            claimed = await store.claim_commands(owner, "x3", now=now, lease_until=now + timedelta(60), limit=4)
            for cmd in claimed:
                claims.append(cmd.id)
                if cmd.order_key in in_flight:
                    overlaps.append(f"{cmd.id} while {in_flight[cmd.order_key]}")
                in_flight[cmd.order_key] = cmd.id
            await asyncio.sleep(random.uniform(0, 0.003))  # the ERP call: other instances claim meanwhile
            for cmd in claimed:
                del in_flight[cmd.order_key]
                finished.setdefault(cmd.order_key, []).append(int(cmd.id.rsplit("-", 1)[1]))
                assert await store.finish_command(
                    cmd.id, owner, status="succeeded", result={}, error=None, now=now, event=None
                )
            if not claimed:
                await asyncio.sleep(0.001)

    await asyncio.wait_for(asyncio.gather(*(work(s, f"inst-{i}") for i, s in enumerate(instances))), 60)
    assert sorted(claims) == sorted({f"C{c}-{n}" for c in range(customers) for n in range(per_customer)})
    assert overlaps == []
    assert finished == {f"C{c}": list(range(per_customer)) for c in range(customers)}
    assert await instances[1].open_command_counts() == {}


async def test_one_idempotency_key_submitted_on_two_instances_at_once_is_stored_once(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()

    def submit(store: PostgresStore, n: int) -> Awaitable[tuple[CommandRow, bool]]:
        cmd = NewCommand(f"cmd{n}", "x3", "order/create", "same-key", "h", b"{}", "C1", None, NOW)
        return store.submit_command(cmd)

    results = await asyncio.gather(*(submit(first if n % 2 else second, n) for n in range(20)))
    assert sum(created for _, created in results) == 1
    assert len({row.id for row, _ in results}) == 1


async def test_instances_starting_at_once_migrate_once(open_store: OpenStore, postgres_url: str) -> None:
    stores = await asyncio.gather(*(open_store() for _ in range(6)))
    known = migrations("postgres")
    assert {await s.schema_version() for s in stores} == {known[-1].version}
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(known)
    finally:
        await conn.close()


async def test_concurrent_ingest_of_one_id_on_two_instances_accepts_once(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    results = await asyncio.gather(
        *(s.ingest([NewEvent(event("same"), [DeliveryPlan("s")])]) for _ in range(10) for s in (a, b))
    )
    assert sum(r[0].status == "accepted" for r in results) == 1
    assert len(await a.list_deliveries(DeliveryFilter(event_id="same"))) == 1


async def test_a_schema_newer_than_the_relay_is_refused(open_store: OpenStore, postgres_url: str) -> None:
    await open_store()
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', '')")
    finally:
        await conn.close()
    newest = migrations("postgres")[-1].version
    with pytest.raises(StoreUnavailable, match=rf"schema version 999, newer than this relay knows \({newest}\)"):
        await open_store()


async def test_an_unreachable_server_is_named_without_the_password() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    store = create_store(f"postgresql://relay:s3cret@127.0.0.1:{port}/relay")
    with pytest.raises(StoreUnavailable) as info:
        await store.open()
    assert f"127.0.0.1:{port}/relay" in str(info.value)
    assert "s3cret" not in str(info.value)


async def _ping_once_reconnected(store: PostgresStore) -> str:
    """The ping's answer once the pool has replaced the connections the server terminated: '' or the error.

    Each terminated connection fails one commit (whether a commit in flight was kept is not known) and is
    discarded, so after `pool_max` failures at most the answer comes from a live connection.
    """
    outcome = ""
    for _ in range(store.pool_max + 1):
        try:
            await store.ping()
        except StoreUnavailable as exc:
            outcome = str(exc)
            if "read-only" in outcome:
                return outcome
        else:
            return ""
    return outcome


async def test_ping_fails_while_the_database_refuses_writes(open_store: OpenStore, postgres_url: str) -> None:
    store = await open_store()
    await store.ping()
    name = postgres_url.rsplit("/", 1)[1]
    terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
    admin = await asyncpg.connect(postgres_url)
    try:
        # Reads still succeed on a read-only server; the ping's real write shows it takes no writes.
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        await admin.execute(terminate, name)
        assert "read-only" in await _ping_once_reconnected(store)
        assert await store.count_events() == 0
        await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        await admin.execute(terminate, name)
        assert await _ping_once_reconnected(store) == ""
        assert (await store.ingest([NewEvent(event("after"))]))[0].status == "accepted"
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        await admin.close()


@pytest.mark.parametrize(
    ("url", "where", "dsn"),
    [
        ("postgresql://u@db.example:6432/relay", "db.example:6432/relay", "postgresql://u@db.example:6432/relay"),
        ("postgres://u:pw@db/relay?sslmode=require", "db:5432/relay", "postgres://u:pw@db/relay?sslmode=require"),
        (
            "postgresql:///relay?host=/run/postgresql",
            "/run/postgresql:5432/relay",
            "postgresql:///relay?host=%2Frun%2Fpostgresql",
        ),
    ],
)
def test_postgres_target_names_the_server_and_never_the_password(url: str, where: str, dsn: str) -> None:
    target = postgres_target(url)
    assert (target.where, target.dsn, target.password) == (where, dsn, None)
    assert "pw" not in str(target)


def test_a_password_file_is_read_and_kept_out_of_the_dsn(tmp_path: Path) -> None:
    secret = tmp_path / "pg.pass"
    secret.write_text("s3cret\n")
    target = postgres_target(f"postgresql://relay@db/relay?password_file={secret}&sslmode=require")
    assert (target.password, target.dsn) == ("s3cret", "postgresql://relay@db/relay?sslmode=require")
    with pytest.raises(ValueError, match="cannot read store password file"):
        postgres_target(f"postgresql://relay@db/relay?password_file={tmp_path / 'missing'}")


async def test_a_follower_of_the_event_cursor_misses_nothing_two_instances_store(open_store: OpenStore) -> None:
    first, second, follower = await open_store(), await open_store(), await open_store()
    seen: list[str] = []
    cursor = 0
    writing = True

    async def follow() -> None:
        nonlocal cursor
        while writing or cursor < await follower.last_event_seq():
            for seq, ev in await follower.list_events_after(EventFilter(limit=1000), after_seq=cursor):
                seen.append(ev.event_id)
                cursor = seq
            await asyncio.sleep(0)  # yield to the writers: the follower polls as `relay events tail` does

    async def write(store: PostgresStore, name: str) -> None:
        for n in range(150):
            await store.ingest([NewEvent(event(f"{name}-{n}-{i}")) for i in range(3)])

    reader = asyncio.create_task(follow())
    await asyncio.gather(write(first, "a"), write(second, "b"))
    writing = False
    await reader
    assert len(seen) == len(set(seen)) == 2 * 150 * 3


async def test_another_instance_is_woken_by_one_notification_per_window_not_per_commit(open_store: OpenStore) -> None:
    sender, receiver = await open_store(), await open_store()
    wakes: list[float] = []
    receiver.add_commit_listener(lambda: wakes.append(time.monotonic()))
    # The receiver wakes once when it starts listening (whatever became due meanwhile); wait for that first.
    await helpers.until(lambda: len(wakes) >= 1, timeout=10)
    wakes.clear()
    await sender.ingest([NewEvent(event("first"), [DeliveryPlan("s")])])
    await helpers.until(lambda: len(wakes) >= 1, timeout=10)
    # A storm of 200 separate commits that each create a delivery: coalesced into a few NOTIFYs.
    wakes.clear()
    started = time.monotonic()
    for n in range(200):  # one after another: 200 group commits, each creating a delivery
        await sender.ingest([NewEvent(event(f"storm-{n}"), [DeliveryPlan("s")])])
    elapsed_s = time.monotonic() - started
    await helpers.until(lambda: len(wakes) >= 1, timeout=10)
    assert len(wakes) <= elapsed_s / 0.05 + 2, (len(wakes), elapsed_s)


async def test_a_poll_lease_has_one_holder_until_it_lapses_or_is_released(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    assert await a.hold_poll_lease("x3", "BPCUSTOMER", "A", 0.5)
    assert not await b.hold_poll_lease("x3", "BPCUSTOMER", "B", 0.5)
    assert await b.hold_poll_lease("x3", "BPCUSTOMER-2", "B", 30)  # another resource is free
    assert await a.hold_poll_lease("x3", "BPCUSTOMER", "A", 0.5)  # renewed by its holder
    # Not renewed: it lapses, and the other instance takes it over.
    await helpers.until(lambda: b.hold_poll_lease("x3", "BPCUSTOMER", "B", 30), timeout=10)
    assert not await a.hold_poll_lease("x3", "BPCUSTOMER", "A", 30)
    assert await b.renew_poll_leases("B", 30) == 2
    assert await a.renew_poll_leases("A", 30) == 0
    await b.release_poll_leases("B")
    assert await a.hold_poll_lease("x3", "BPCUSTOMER", "A", 30)


async def test_a_rate_bucket_is_one_limit_for_every_instance(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    # A new bucket starts full (the burst), whichever instance asks first; the other shares what is left.
    assert (await a.take_rate_tokens("s", 2.0, 4.0, 3))[0] == 3
    granted, left = await b.take_rate_tokens("s", 2.0, 4.0, 3)
    assert granted == 1
    assert left < 1
    assert (await a.take_rate_tokens("s", 2.0, 4.0, 3))[0] == 0
    # Refilled at the rate by the database's clock: one whole token within about half a second.
    started = time.monotonic()
    await helpers.until(lambda: _granted(b, "s", 2.0, 4.0), timeout=5, interval=0.02)
    assert time.monotonic() - started >= 0.3
    # Tokens given back are there for any instance, never above the burst; other subscribers have their own.
    await a.return_rate_tokens("s", 10, 4.0)
    assert (await b.take_rate_tokens("s", 2.0, 4.0, 10))[0] == 4
    assert (await b.take_rate_tokens("other", 2.0, 4.0, 10))[0] == 4


async def _granted(store: PostgresStore, subscriber: str, rate_per_s: float, burst: float) -> bool:
    return (await store.take_rate_tokens(subscriber, rate_per_s, burst, 1))[0] == 1


async def test_instances_taking_at_once_never_get_more_than_the_bucket_holds(open_store: OpenStore) -> None:
    stores = [await open_store() for _ in range(3)]
    # A slow refill (one token in 1000 s): only the burst of 20 can be granted, however the takes interleave.
    results = await asyncio.gather(*(s.take_rate_tokens("s", 0.001, 20.0, 1) for s in stores for _ in range(15)))
    assert sum(granted for granted, _ in results) == 20

"""`relay store copy`: an SQLite installation moved into PostgreSQL, verified by counts, and a relay serving the
copy delivers what was pending and replays what was delivered."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
import asyncpg
import orjson
import pytest
from helpers import arun_cli, base_config, completion, relay_process, run_cli, sample_event, until
from helpers import write_config as write
from subscriber import Subscriber, subscriber_config

from bench.preload import PreloadSpec, preload
from relay.events import Event, utc_text
from relay.store import (
    Checkpoint,
    ClaimRequest,
    CommandFilter,
    DeliveryFilter,
    DeliveryPlan,
    EventFilter,
    NewCommand,
    NewEvent,
    PollCommit,
    QuarantineEntry,
    Store,
    create_store,
)

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


def order(n: int) -> Event:
    body = sample_event("order/synced", f"order-{n}")
    return Event(
        event_id=f"order-{n}",
        channel="order/synced",
        source="hub",
        tenant_id=None,
        entity_key=f"SO-{n % 7}",
        version=f"2026-11-20T10:00:{n % 60:02d}Z",
        occurred_at=NOW,
        received_at=NOW + timedelta(milliseconds=n),
        payload=orjson.dumps(body),
    )


async def settle(store: Store, count: int, *, batch: int = 5000) -> None:
    """An old relay's work: `count` due deliveries of subscriber `s` claimed (oldest first, `batch` at a time) and
    attempted once; every fourth answered 500 and given up (dead), the others delivered."""
    now = datetime.now(UTC)
    for first in range(0, count, batch):
        limit = min(batch, count - first)
        claimed = await store.claim_deliveries(
            "old-relay", now, [ClaimRequest("s", limit, False, now + timedelta(minutes=1))]
        )
        completions = [
            completion(
                d.id,
                "old-relay",
                started_at=now,
                duration_ms=12.5,
                status=200 if i % 4 else 500,
                error=None if i % 4 else "HTTP 500",
                response_excerpt=b"ok" if i % 4 else b"boom",
                state="delivered" if i % 4 else "dead",
            )
            for i, d in enumerate(claimed)
        ]
        await store.complete_deliveries(completions)


async def fill_sqlite(store: Store) -> None:
    """Events with delivered, dead and pending deliveries and their attempts, and the rest of a store."""
    await store.ingest([NewEvent(order(n), [DeliveryPlan("s")]) for n in range(60)])
    await settle(store, 40)
    await fill_besides_deliveries(store)


async def fill_besides_deliveries(store: Store) -> None:
    """Quarantine, a checkpoint with record hashes and its event, observations, a circuit state, commands."""
    await store.quarantine(QuarantineEntry("hub", "not JSON", b"{", NOW, details=[{"path": "$", "message": "x"}]))
    commit = PollCommit(
        "x3",
        "BPCUSTOMER",
        [NewEvent(order(100))],
        [("C1", "h1")],
        Checkpoint("2026-11-20T00:00:00Z", "k", {"a": 1}),
        shape={"BPCNUM": "string"},
    )
    await store.commit_poll(commit)
    await store.commit_observation("x3", "BPCUSTOMER", "health", {"state": "failing", "failures": 3})
    await store.set_circuit_state("s", "closed")
    # Write-back commands: one succeeded, one leased by the old relay, one waiting behind it (same customer).
    for n, name in enumerate(("done", "leased", "waiting")):
        body = orjson.dumps({"n": n})
        cmd = NewCommand(f"cmd-{name}", "x3", "order/create", name, f"h{n}", body, f"C{min(n, 1)}", f"Q-{n}", NOW)
        await store.submit_command(cmd)
    claimed = await store.claim_commands("old-relay", "x3", now=NOW, lease_until=NOW + timedelta(minutes=1), limit=9)
    assert [c.id for c in claimed] == ["cmd-done", "cmd-leased"]
    finished = await store.finish_command(
        "cmd-done", "old-relay", status="succeeded", result={"documentNumber": "SO1"}, error=None, now=NOW, event=None
    )
    assert finished


async def snapshot(store: Store) -> tuple[object, ...]:
    events = await store.list_events(EventFilter(limit=10_000))
    deliveries = await store.list_deliveries(DeliveryFilter(limit=10_000))
    attempts = [await store.list_attempts(d.id) for d in deliveries]
    return (
        events,
        deliveries,
        attempts,
        await store.list_quarantine(),
        await store.get_checkpoint("x3", "BPCUSTOMER"),
        await store.record_hashes("x3", "BPCUSTOMER", ["C1"]),
        [await store.get_state("order", f"SO-{k}") for k in range(7)],
        {name: (s.pending, s.dead) for name, s in (await store.subscriber_states()).items()},
        await store.list_commands(CommandFilter()),
        [await store.get_observation("x3", "BPCUSTOMER", kind) for kind in ("shape", "health")],
    )


async def store_copy(sqlite_url: str, postgres_url: str) -> dict[str, tuple[int, int]]:
    """`relay store copy` run as a user runs it, succeeding: the source and copied rows it reports per table."""
    copied = await arun_cli("store", "copy", sqlite_url, postgres_url)
    assert copied.returncode == 0, copied.stderr
    assert "every count matches" in copied.stdout
    assert "postgres@" not in copied.stdout  # the user part of the URL is masked
    cells = [[cell.strip() for cell in line.split("│")][1:4] for line in copied.stdout.splitlines()]
    return {row[0]: (int(row[1]), int(row[2])) for row in cells if len(row) == 3 and row[1].isdigit()}


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, store_url: str) -> AsyncIterator[tuple[Subscriber, Path]]:
    """`relay serve` on the store at `store_url`, ready, delivering to subscriber `s`: a real receiver that
    verifies signatures. Yields the receiver and the relay's configuration file."""
    sub = Subscriber()
    await sub.start()
    try:
        data = base_config(tmp_path, store={"url": store_url}, subscribers=[subscriber_config("s", sub.url)])
        config = write(tmp_path, data)
        with relay_process(config, tmp_path) as relay:
            await relay.wait_ready()
            yield sub, config
    finally:
        await sub.stop()


async def test_copy_moves_everything_verified_and_the_copy_delivers_and_replays(
    tmp_path: Path, postgres_url: str
) -> None:
    sqlite_url = f"sqlite://{tmp_path / 'relay.db'}"
    source = create_store(sqlite_url)
    await source.open()
    await fill_sqlite(source)
    before = await snapshot(source)
    await source.close()

    reported = await store_copy(sqlite_url, postgres_url)
    copied_rows = (
        ("events", 61),
        ("deliveries", 60),
        ("attempts", 40),
        ("quarantine", 1),
        ("commands", 3),
        ("resource_observations", 2),
    )
    for table, rows in copied_rows:
        assert reported[table] == (rows, rows), table

    target = create_store(postgres_url)
    await target.open()
    try:
        assert await snapshot(target) == before
        states = (await target.subscriber_states())["s"]
        assert (states.pending, states.dead) == (20, 10)
        # New rows continue after the copied ids.
        await target.ingest([NewEvent(order(200), [DeliveryPlan("s")])])
        newest = (await target.list_deliveries(DeliveryFilter(limit=1)))[0]
        assert newest.id > max(d.id for d in before[1])  # type: ignore[attr-defined]
        assert (await target.list_events(EventFilter(newest_first=True, limit=1)))[0].event_id == "order-200"
        # Commands keep their order: once the old relay's lease ran out, its command is taken over and the one
        # behind it (same customer) still waits; a new command is ordered after the copied ones.
        later = NOW + timedelta(minutes=2)
        again = await target.claim_commands("new-relay", "x3", now=later, lease_until=later + timedelta(1), limit=9)
        assert [(c.id, c.attempts) for c in again] == [("cmd-leased", 2)]
        new_cmd = NewCommand("cmd-new", "x3", "order/create", "new", "h", b"{}", "C9", None, later)
        assert (await target.submit_command(new_cmd))[1]
        assert [c.id for c in await target.list_commands(CommandFilter(limit=2))] == ["cmd-new", "cmd-waiting"]
    finally:
        await target.close()

    async with serving(tmp_path, postgres_url) as (sub, config):
        # What was pending in the SQLite store is delivered from the copy (and the event stored since).
        await until(lambda: len(set(sub.delivered_ids())) >= 21, timeout=20)
        pending = {f"order-{n}" for n in range(40, 60)} | {"order-200"}
        assert set(sub.delivered_ids()) == pending
        assert all(r.verified for r in sub.delivered)
        replay = await arun_cli("replay", "-c", str(config), "--event-id", "order-3")
        assert replay.returncode == 0, replay.stderr
        await until(lambda: "order-3" in sub.delivered_ids(), timeout=10)
        last = sub.delivered[-1]
        assert (last.event_id, last.headers["relay-replay"], last.verified) == ("order-3", "true", True)


# The same query on both sides of a copy: events, deliveries per state, attempts, checkpoints, quarantine.
COUNTS = """
SELECT 'events', count(*) FROM events UNION ALL
SELECT 'deliveries ' || state, count(*) FROM deliveries GROUP BY state UNION ALL
SELECT 'attempts', count(*) FROM attempts UNION ALL
SELECT 'checkpoints', count(*) FROM checkpoints UNION ALL
SELECT 'quarantine', count(*) FROM quarantine
"""


@pytest.mark.slow  # 100,000 events: a store filled, copied, served and replayed from in about half a minute
async def test_copy_of_100k_events_counts_equal_and_the_copy_delivers_and_replays(
    tmp_path: Path, postgres_url: str
) -> None:
    db = tmp_path / "relay.db"
    sqlite_url = f"sqlite://{db}"
    # Event i is received at start + i ms: a second of the store's time holds 1,000 events.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    spec = PreloadSpec(
        events=100_000, db=str(db), subscribers=["s"], batch=10_000, received_from=utc_text(start), step_us=1000
    )
    assert (await preload(spec))["events"] == 100_000
    source = create_store(sqlite_url)
    await source.open()
    try:
        await settle(source, 99_000, batch=10_000)
        await fill_besides_deliveries(source)
        pending = {d.event_id for d in await source.list_deliveries(DeliveryFilter(state="pending", limit=10_000))}
    finally:
        await source.close()
    async with aiosqlite.connect(db) as conn:
        before = {str(r[0]): int(r[1]) for r in await conn.execute_fetchall(COUNTS)}
    assert before == {
        "events": 100_001,
        "deliveries delivered": 74_250,
        "deliveries dead": 24_750,
        "deliveries pending": 1_000,
        "attempts": 99_000,
        "checkpoints": 1,
        "quarantine": 1,
    }
    assert len(pending) == 1_000

    reported = await store_copy(sqlite_url, postgres_url)
    for table in ("events", "attempts", "checkpoints", "quarantine"):
        assert reported[table] == (before[table], before[table]), table
    assert reported["deliveries"] == (100_000, 100_000)
    conn = await asyncpg.connect(postgres_url)
    try:
        assert {str(r[0]): int(r[1]) for r in await conn.fetch(COUNTS)} == before
    finally:
        await conn.close()

    async with serving(tmp_path, postgres_url) as (sub, config):
        # One second of the copied events (50,000 to 50,999) replayed, while the pending ones are delivered.
        since, until_ = start + timedelta(seconds=50), start + timedelta(seconds=51)
        replay = await arun_cli("replay", "-c", str(config), "--since", utc_text(since), "--until", utc_text(until_))
        assert replay.returncode == 0, replay.stderr
        assert replay.stdout.strip() == "1000 replay deliveries created for 1000 event(s)"
        replayed = {f"pre-{i}" for i in range(50_000, 51_000)}
        await until(lambda: set(sub.delivered_ids()) >= pending | replayed, timeout=30)
        by_replay = {
            flag: {r.event_id for r in sub.delivered if r.headers["relay-replay"] == flag} for flag in ("true", "false")
        }
        assert by_replay == {"true": replayed, "false": pending}
        assert all(r.verified for r in sub.delivered)


async def test_copy_refuses_a_target_that_holds_data_and_changes_nothing(tmp_path: Path, postgres_url: str) -> None:
    sqlite_url = f"sqlite://{tmp_path / 'relay.db'}"
    for url in (sqlite_url, postgres_url):
        store = create_store(url)
        await store.open()
        await store.ingest([NewEvent(order(1 if url == sqlite_url else 2))])
        await store.close()

    refused = run_cli("store", "copy", sqlite_url, postgres_url)
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: the target database at 127.0.0.1:5432/")
    assert line.endswith("is not empty (1 events, 1 entity_state): copy into a new one")
    conn = await asyncpg.connect(postgres_url)
    try:
        assert [r[0] for r in await conn.fetch("SELECT event_id FROM events")] == ["order-2"]
    finally:
        await conn.close()

    backwards = run_cli("store", "copy", postgres_url, sqlite_url)
    assert backwards.returncode == 1
    assert backwards.stderr.strip() == "error: the source must be an sqlite:// store URL"
    missing = run_cli("store", "copy", f"sqlite://{tmp_path / 'nothing.db'}", postgres_url)
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: the source {tmp_path / 'nothing.db'} does not exist"

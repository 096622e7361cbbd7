"""SQLite backend: WAL, one batching writer (group commit), a separate reader connection."""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite
import orjson
import structlog

from relay import metrics
from relay.events import Event, parse_ts, utc_text
from relay.store._sql import migrations, queries
from relay.store._writer import GroupCommit, WriteOp
from relay.store.base import (
    DEFAULT_QUARANTINE_MAX_BYTES,
    Checkpoint,
    ClaimedDelivery,
    ClaimRequest,
    CommandFilter,
    CommandRow,
    ConfirmEntry,
    ConfirmRow,
    DeliveryFilter,
    DeliveryRow,
    EventFilter,
    IngestOutcome,
    InstanceRecord,
    NewCommand,
    NewEvent,
    PollCommit,
    QuarantineEntry,
    QuarantineRow,
    ReplayEvent,
    RuleState,
    StateRecord,
    Store,
    StoreUnavailable,
    SubscriberState,
    attempt_from_row,
    claimed_from_row,
    command_from_row,
    confirm_from_row,
    delivery_from_row,
    event_from_row,
    quarantine_from_row,
    replay_event_from_row,
    state_from_row,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")
Q = queries("sqlite")

_EVENT_COLUMNS = 11
# Beside the database SQLite keeps its write-ahead log and shared-memory index; all three must stay ours.
_COMPANION_SUFFIXES = ("", "-wal", "-shm")
# Budget drops are logged at most this often (a flood of refused input must not flood the log too).
_DROP_LOG_INTERVAL_S = 60.0


def db_ts(value: datetime) -> str:
    """Fixed-width ISO 8601 UTC text: compares as an instant in SQL."""
    return utc_text(value)


def sqlite_path_from_url(url: str) -> Path:
    """`sqlite:///var/lib/x.db` → `/var/lib/x.db`; `sqlite://relay.db` → `relay.db` (relative)."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    rest = url[len("sqlite://") :].split("?", 1)[0]
    if not rest or rest == "/":
        raise ValueError("sqlite URL needs a file path, e.g. sqlite:///var/lib/erp-relay/relay.db")
    return Path(rest)


_WriteOp = WriteOp[aiosqlite.Connection]


# Ids and keys are bound one per parameter, never inside a JSON text: SQLite 3.40's json_each cuts a string at an
# escaped NUL, so such a value would never match. Lists are padded (with NULL, which matches nothing) to a power of
# two so that a handful of statements serve every batch size from the statement cache.
_IN_LIST_MAX = 512


@functools.cache
def _in_list_sql(name: str, size: int) -> str:
    return Q[name].replace(":ids", ", ".join(f":id_{i}" for i in range(size)))


def _observation(source: str, resource: str, kind: str, value: Mapping[str, Any], now: str) -> dict[str, Any]:
    return {"source": source, "resource": resource, "kind": kind, "value": orjson.dumps(dict(value)).decode(),
            "updated_at": now}  # fmt: skip


def _in_list_params(values: Sequence[Any], **fixed: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """Chunks of at most `_IN_LIST_MAX` values as `id_<n>` parameters (plus `fixed`), padded: (size, params)."""
    for start in range(0, len(values), _IN_LIST_MAX):
        chunk = values[start : start + _IN_LIST_MAX]
        size = 1 << (len(chunk) - 1).bit_length()
        params = {f"id_{i}": chunk[i] if i < len(chunk) else None for i in range(size)}
        yield size, {**fixed, **params}


async def _existing_event_ids(conn: aiosqlite.Connection, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for size, params in _in_list_params(ids):
        found.update(row[0] for row in await conn.execute_fetchall(_in_list_sql("existing_event_ids", size), params))
    return found


async def _rule_states(conn: aiosqlite.Connection, events: Sequence[Event]) -> dict[tuple[str, str], RuleState]:
    """Where every rule stands for the keys of `events`: one query per batch (keys bound one per parameter)."""
    keys = sorted({ev.entity_key for ev in events if ev.entity_key is not None})
    found: dict[tuple[str, str], RuleState] = {}
    for size, params in _in_list_params(keys):
        for rule, key, active, version_order, event_id in await conn.execute_fetchall(
            _in_list_sql("rule_states_for", size), params
        ):
            found[(rule, key)] = RuleState(rule, key, bool(active), version_order, event_id)
    return found


class SqliteStore(GroupCommit[aiosqlite.Connection], Store):
    """The embedded store. One connection writes (batched), another reads."""

    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        batch_max: int = 512,
        busy_timeout_s: float = 5.0,
        quarantine_max_bytes: int = DEFAULT_QUARANTINE_MAX_BYTES,
    ) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self._init_writer(batch_max)
        self.busy_timeout_s = busy_timeout_s
        self.quarantine_max_bytes = quarantine_max_bytes
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._closed = False
        self._commit_listeners: list[Callable[[], None]] = []
        # (st_dev, st_ino) of the database and its companions as opened: a different answer later means the
        # files were removed or replaced, and a commit into them would be lost.
        self._file_ids: dict[Path, tuple[int, int]] = {}
        self._lost: str | None = None
        self._last_write_failed = False
        self._drops_unlogged = 0
        self._drop_logged_at = float("-inf")

    # ------------------------------------------------------------------------------------ lifecycle

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            await conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            # Not a database, or unreadable: close it, or its worker thread keeps the process alive.
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        return conn

    async def open(self) -> None:
        try:
            _create_private(self.path)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create {self.path}: {exc.strerror or exc}") from exc
        try:
            self._writer = await self._connect()
            await self._migrate(self._writer)
            self._reader = await self._connect()
            usage = await self._writer.execute_fetchall(Q["quarantine_bytes"])
        except sqlite3.Error as exc:
            await self._close_connections()
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
        metrics.QUARANTINE_BYTES.set(int(next(iter(usage))[0]))
        # WAL mode and the migration's commit have created the log and the index by now.
        for suffix in _COMPANION_SUFFIXES:
            companion = self.path.with_name(self.path.name + suffix)
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(companion)
                self._file_ids[companion] = (st.st_dev, st.st_ino)
        self._start_writer("sqlite-writer")

    def _check_files(self) -> None:
        """Raise StoreUnavailable once the database or a companion file is gone or is another file.

        Costs one stat() per file (about a microsecond each), so it runs on every group commit.
        """
        if self._lost is None:
            for path, opened_id in self._file_ids.items():
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    problem = "was removed"
                except OSError as exc:
                    raise StoreUnavailable(f"cannot check {path}: {exc.strerror or exc}") from exc
                else:
                    if (st.st_dev, st.st_ino) == opened_id:
                        continue
                    problem = "was replaced by another file"
                self._lost = f"{path} {problem} while open; nothing more is acknowledged until the relay restarts"
                log.error(
                    "store file removed or replaced: refusing writes until restart", path=str(path), problem=problem
                )
                break
        if self._lost is not None:
            raise StoreUnavailable(self._lost)

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        await conn.execute(Q["create_migrations_table"])
        # IMMEDIATE: a second process starting at the same moment waits instead of migrating twice.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            applied = {row[0] for row in await conn.execute_fetchall(Q["applied_migrations"])}
            for migration in migrations("sqlite"):
                if migration.version in applied:
                    continue
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute(
                    Q["record_migration"],
                    {"version": migration.version, "name": migration.name, "applied_at": db_ts(_now())},
                )
                log.info("migration applied", version=migration.version, name=migration.name)
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stop_writer()
        await self._close_connections()

    async def _close_connections(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._writer = self._reader = None

    def add_commit_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every commit that created deliveries (wakes the dispatcher)."""
        self._commit_listeners.append(callback)

    # ------------------------------------------------------------------------------------ the writer

    async def _flush(self, batch: list[_WriteOp]) -> None:
        conn = self._writer
        assert conn is not None
        results: dict[_WriteOp, Any] = {}
        errors: dict[_WriteOp, BaseException] = {}
        created_deliveries = 0
        if self._lost is not None:
            self._fail(batch, StoreUnavailable(self._lost))
            return
        changes_before = conn.total_changes
        started = time.perf_counter()
        try:
            await conn.execute("BEGIN IMMEDIATE")
            ingest_ops = [op for op in batch if op.kind == "ingest"]
            if ingest_ops:
                try:
                    outcomes, created_deliveries = await self._apply_ingest(conn, ingest_ops)
                except Exception as exc:
                    # Nothing but this ingest ran yet: start over with a savepoint per request, so the one
                    # that broke the batch fails alone. The happy path pays no savepoint round trips.
                    log.warning("ingest batch failed; retrying each request alone", error=str(exc), batch=len(batch))
                    await conn.execute("ROLLBACK")
                    await conn.execute("BEGIN IMMEDIATE")
                    outcomes, created_deliveries = await self._apply_ingest_isolated(conn, ingest_ops, errors)
                results.update(outcomes)
            completion_ops = [op for op in batch if op.kind == "complete"]
            if completion_ops:
                await self._apply_completions(conn, completion_ops)
            for op in batch:
                if op.kind != "call":
                    continue
                assert op.fn is not None
                await conn.execute("SAVEPOINT op")
                try:
                    results[op] = await op.fn(conn)
                except Exception as exc:
                    await conn.execute("ROLLBACK TO op")
                    errors[op] = exc
                await conn.execute("RELEASE op")
            await conn.execute("COMMIT")
            # Checked after the commit: a batch committed into a removed file is lost, so it is not acknowledged.
            self._check_files()
        except Exception as exc:
            self._last_write_failed = True
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
            log.error("commit failed", error=str(exc), batch=len(batch))
            self._fail(batch, StoreUnavailable(f"commit failed: {exc}"))
            return
        if conn.total_changes != changes_before:
            self._last_write_failed = False  # only a commit that wrote something shows that writes succeed
        self._settle(batch, results, errors, started)
        if created_deliveries:
            self._notify()

    async def _apply_ingest_isolated(
        self, conn: aiosqlite.Connection, ops: list[_WriteOp], errors: dict[_WriteOp, BaseException]
    ) -> tuple[dict[_WriteOp, list[IngestOutcome]], int]:
        """`_apply_ingest` one request at a time, each in a savepoint: a failing request is rolled back alone."""
        outcomes: dict[_WriteOp, list[IngestOutcome]] = {}
        created = 0
        for op in ops:
            await conn.execute("SAVEPOINT ingest_op")
            try:
                op_outcomes, op_created = await self._apply_ingest(conn, [op])
            except Exception as exc:
                await conn.execute("ROLLBACK TO ingest_op")
                ids = [item.event.event_id for item in op.items][:5]
                log.error("event not stored", error=str(exc), event_ids=ids)
                errors[op] = StoreUnavailable(f"the event was not stored: {exc}")
            else:
                outcomes.update(op_outcomes)
                created += op_created
            await conn.execute("RELEASE ingest_op")
        return outcomes, created

    async def _apply_ingest(
        self, conn: aiosqlite.Connection, ops: list[_WriteOp]
    ) -> tuple[dict[_WriteOp, list[IngestOutcome]], int]:
        ids = [item.event.event_id for op in ops for item in op.items]
        seen = await _existing_event_ids(conn, ids)
        event_rows: list[dict[str, Any]] = []
        delivery_rows: list[dict[str, Any]] = []
        supersede_rows: list[dict[str, Any]] = []
        state_rows: list[dict[str, Any]] = []
        outcomes: dict[_WriteOp, list[IngestOutcome]] = {}
        deriver = self.deriver
        triggers: list[Event] = []
        for op in ops:
            op_outcomes = []
            for item in op.items:
                ev = item.event
                if ev.event_id in seen:
                    op_outcomes.append(IngestOutcome(ev.event_id, "duplicate"))
                    continue
                seen.add(ev.event_id)
                self._add_rows(item, event_rows, delivery_rows, supersede_rows, state_rows)
                if deriver is not None and ev.entity_key is not None and ev.channel in deriver.channels:
                    triggers.append(ev)
                op_outcomes.append(IngestOutcome(ev.event_id, "accepted", len(item.deliveries)))
            outcomes[op] = op_outcomes
        if triggers and deriver is not None:
            # Derived events join this batch: a crash loses both or neither, and a redelivered trigger is a
            # duplicate that derives nothing again.
            derivation = deriver.derive(triggers, await _rule_states(conn, triggers))
            derived = [item for item in derivation.events if item.event.event_id not in seen]
            known = await _existing_event_ids(conn, [item.event.event_id for item in derived]) if derived else set()
            for item in derived:
                if item.event.event_id not in known:
                    seen.add(item.event.event_id)
                    self._add_rows(item, event_rows, delivery_rows, supersede_rows, state_rows)
            if derivation.states:
                await conn.executemany(
                    Q["upsert_rule_state"],
                    [
                        {
                            "rule": st.rule,
                            "entity_key": st.entity_key,
                            "active": int(st.active),
                            "version_order": st.version_order,
                            "event_id": st.event_id,
                        }
                        for st in derivation.states
                    ],
                )
        if event_rows:
            await conn.executemany(Q["insert_event"], event_rows)
        if supersede_rows:
            # Before the inserts: the new versions themselves must not be superseded.
            await conn.executemany(Q["supersede_older"], supersede_rows)
        if delivery_rows:
            await conn.executemany(Q["insert_delivery_checked"], delivery_rows)
        if state_rows:
            await conn.executemany(Q["upsert_entity_state"], state_rows)
        return outcomes, len(delivery_rows)

    @staticmethod
    def _add_rows(
        item: NewEvent,
        event_rows: list[dict[str, Any]],
        delivery_rows: list[dict[str, Any]],
        supersede_rows: list[dict[str, Any]],
        state_rows: list[dict[str, Any]],
    ) -> None:
        """The rows one new event adds to its batch: the event, its deliveries, supersessions, its key's state."""
        ev = item.event
        received = db_ts(ev.received_at)
        version_order = ev.version_order
        event_rows.append(
            {
                "event_id": ev.event_id,
                "channel": ev.channel,
                "source": ev.source,
                "tenant_id": ev.tenant_id,
                "entity_key": ev.entity_key,
                "version": ev.version,
                "version_order": version_order,
                "occurred_at": db_ts(ev.occurred_at),
                "received_at": received,
                "payload": ev.payload,
                "original": ev.original,
                "original_type": ev.original_type,
            }
        )
        for plan in item.deliveries:
            delivery_rows.append(
                {
                    "event_id": ev.event_id,
                    "subscriber": plan.subscriber,
                    "entity_key": ev.entity_key,
                    "version_order": version_order,
                    "state": "pending",
                    "check_stale": int(plan.check_stale),
                    "created_at": received,
                    "next_attempt_at": received,
                }
            )
            if plan.collapse and ev.entity_key is not None:
                supersede_rows.append(
                    {
                        "event_id": ev.event_id,
                        "subscriber": plan.subscriber,
                        "entity_key": ev.entity_key,
                        "version_order": version_order,
                        "now": received,
                    }
                )
        if item.track_state and ev.entity_key is not None:
            noun, _, verb = ev.channel.partition("/")
            state_rows.append(
                {
                    "noun": noun,
                    "entity_key": ev.entity_key,
                    "channel": ev.channel,
                    "version": ev.version,
                    "version_order": version_order,
                    "event_id": ev.event_id,
                    "received_at": received,
                    "deleted": int(verb == "deleted"),
                    "payload": ev.payload,
                }
            )

    async def _apply_completions(self, conn: aiosqlite.Connection, ops: list[_WriteOp]) -> None:
        attempts: list[dict[str, Any]] = []
        finishes: list[dict[str, Any]] = []
        keys: list[dict[str, Any]] = []
        stale: list[dict[str, Any]] = []
        successes: dict[str, str] = {}
        for op in ops:
            for c in op.completions:
                finished = db_ts(c.started_at + timedelta(milliseconds=c.duration_ms))
                attempts.append(
                    {
                        "delivery_id": c.delivery_id,
                        "attempt": c.attempt,
                        "started_at": db_ts(c.started_at),
                        "duration_ms": c.duration_ms,
                        "status": c.status,
                        "error": c.error,
                        "response_excerpt": c.response_excerpt,
                    }
                )
                finishes.append(
                    {
                        "delivery_id": c.delivery_id,
                        "owner": c.owner,
                        "state": c.state,
                        "attempt": c.attempt,
                        "next_attempt_at": db_ts(c.next_attempt_at) if c.next_attempt_at else None,
                        "status": c.status,
                        "error": c.error,
                        "finished_at": finished if c.state != "pending" else None,
                    }
                )
                if c.state == "delivered":
                    successes[c.subscriber] = max(successes.get(c.subscriber, ""), finished)
                    if c.track_key and c.entity_key is not None:
                        row = {
                            "subscriber": c.subscriber,
                            "entity_key": c.entity_key,
                            "version_order": c.version_order,
                            "now": finished,
                        }
                        keys.append(row)
                        if c.mark_older_stale:
                            stale.append(row)
        await conn.executemany(Q["insert_attempt"], attempts)
        await conn.executemany(Q["finish_delivery"], finishes)
        if keys:
            await conn.executemany(Q["record_key_delivered"], [{k: r[k] for k in r if k != "now"} for r in keys])
        if stale:
            await conn.executemany(Q["mark_older_stale"], stale)
        if successes:
            await conn.executemany(
                Q["touch_subscriber_success"], [{"subscriber": k, "now": v} for k, v in successes.items()]
            )

    # ------------------------------------------------------------------------------------ writes

    async def ingest(self, items: Sequence[NewEvent]) -> list[IngestOutcome]:
        if not items:
            return []
        op = self._op("ingest", items=items, size=len(items))
        result: list[IngestOutcome] = await self._submit(op)
        return result

    async def quarantine(self, entry: QuarantineEntry) -> int:
        details = orjson.dumps(entry.details).decode()
        params = {
            "received_at": db_ts(entry.received_at),
            "source": entry.source,
            "channel": entry.channel,
            "reason": entry.reason,
            "details": details,
            "content_type": entry.content_type,
            "size": len(entry.body) + len(entry.reason.encode()) + len(details.encode()),
            "body": entry.body,
        }
        max_bytes = self.quarantine_max_bytes

        async def insert(conn: aiosqlite.Connection) -> tuple[int, int, int]:
            rows = await conn.execute_fetchall(Q["insert_quarantine"], params)
            quarantine_id = int(next(iter(rows))[0])
            # In the insert's transaction: the database never holds more than the budget, even between prunes.
            dropped, usage = await _drop_over_budget(conn, max_bytes, keep_id=quarantine_id)
            return quarantine_id, dropped, usage

        quarantine_id, dropped, usage = await self.write(insert)
        metrics.QUARANTINE_BYTES.set(usage)
        if dropped:
            metrics.labelled(metrics.QUARANTINE_DROPPED, "budget").inc(dropped)
            self._log_budget_drops(dropped, max_bytes)
        return quarantine_id

    def _log_budget_drops(self, dropped: int, max_bytes: int) -> None:
        self._drops_unlogged += dropped
        now = time.monotonic()
        if now - self._drop_logged_at >= _DROP_LOG_INTERVAL_S:
            log.warning(
                "quarantine over its budget: oldest entries dropped",
                dropped=self._drops_unlogged,
                max_bytes=max_bytes,
            )
            self._drops_unlogged = 0
            self._drop_logged_at = now

    async def prune_quarantine(self, cutoff: datetime, *, limit: int = 1000) -> int:
        params = {"cutoff": db_ts(cutoff), "limit": limit}

        async def delete(conn: aiosqlite.Connection) -> tuple[int, int]:
            cursor = await conn.execute(Q["prune_quarantine"], params)
            rows = await conn.execute_fetchall(Q["quarantine_bytes"])
            return int(cursor.rowcount), int(next(iter(rows))[0])

        deleted, usage = await self.write(delete)
        metrics.QUARANTINE_BYTES.set(usage)
        if deleted:
            metrics.labelled(metrics.QUARANTINE_DROPPED, "retention").inc(deleted)
        return deleted

    async def delete_quarantine(self, quarantine_id: int) -> bool:
        async def delete(conn: aiosqlite.Connection) -> bool:
            cursor = await conn.execute(Q["delete_quarantine"], {"id": quarantine_id})
            return cursor.rowcount > 0

        return await self.write(delete)

    # ------------------------------------------------------------------------------------ ConfirmBODs

    async def enqueue_confirm(self, entry: ConfirmEntry, *, max_pending: int) -> int | None:
        params = {
            "source": entry.source,
            "created_at": db_ts(entry.created_at),
            "bod_id": entry.bod_id,
            "parameters": entry.parameters,
            "payload": entry.payload,
        }

        async def insert(conn: aiosqlite.Connection) -> int | None:
            # Counted in the insert's transaction: the bound holds however many refusals arrive at once.
            rows = await conn.execute_fetchall(Q["count_ion_confirms"], {"source": entry.source})
            if int(next(iter(rows))[0]) >= max_pending:
                return None
            inserted = await conn.execute_fetchall(Q["insert_ion_confirm"], params)
            return int(next(iter(inserted))[0])

        return await self.write(insert)

    async def due_confirms(self, now: datetime, *, limit: int) -> list[ConfirmRow]:
        rows = await self._read(Q["due_ion_confirms"], {"now": db_ts(now), "limit": limit})
        return [confirm_from_row(r) for r in rows]

    async def next_confirm_at(self) -> datetime | None:
        rows = list(await self._read(Q["next_ion_confirm_at"]))
        return parse_ts(rows[0][0]) if rows and rows[0][0] else None

    async def finish_confirm(self, confirm_id: int) -> None:
        async def delete(conn: aiosqlite.Connection) -> None:
            await conn.execute(Q["delete_ion_confirm"], {"id": confirm_id})

        await self.write(delete)

    async def retry_confirm(self, confirm_id: int, *, attempts: int, next_attempt_at: datetime, error: str) -> None:
        params = {
            "id": confirm_id,
            "attempts": attempts,
            "next_attempt_at": db_ts(next_attempt_at),
            "last_error": error,
        }

        async def update(conn: aiosqlite.Connection) -> None:
            await conn.execute(Q["retry_ion_confirm"], params)

        await self.write(update)

    # ------------------------------------------------------------------------------------ reads

    async def _read(self, sql: str, params: dict[str, Any] | None = None) -> Iterable[sqlite3.Row]:
        if self._reader is None:
            raise StoreUnavailable("the store is closed")
        try:
            return await self._reader.execute_fetchall(sql, params or {})
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"read failed: {exc}") from exc

    async def ping(self) -> None:
        self._check_files()
        for path in self._file_ids:
            # access() honours read-only mounts and immutable files even for root, unlike the mode bits.
            if not os.access(path, os.W_OK):
                raise StoreUnavailable(f"{path} is not writable")

        async def probe(conn: aiosqlite.Connection) -> None:
            # Through the writer: it is alive and gets the write lock. After a failed commit, only a real write
            # shows that writes succeed again (a full disk lets an empty transaction commit).
            if self._last_write_failed:
                await conn.execute(Q["touch_store_probe"], {"now": db_ts(_now())})

        await self.write(probe)
        await self._read(Q["ping"])

    async def schema_version(self) -> int:
        rows = list(await self._read(Q["applied_migrations"]))
        return int(rows[-1][0]) if rows else 0

    async def list_events(self, flt: EventFilter) -> list[Event]:
        return [event for _, event in await self.list_events_after(flt, after_seq=0)]

    async def list_events_after(self, flt: EventFilter, *, after_seq: int) -> list[tuple[int, Event]]:
        rows = await self._read(
            Q["list_events_newest" if flt.newest_first else "list_events"],
            {
                "channel": flt.channel,
                "source": flt.source,
                "entity_key": flt.entity_key,
                "event_id": flt.event_id,
                "since": db_ts(flt.since) if flt.since else None,
                "until": db_ts(flt.until) if flt.until else None,
                "after_seq": after_seq,
                "limit": flt.limit,
            },
        )
        return [(int(row[0]), event_from_row(row[1:])) for row in rows]

    async def last_event_seq(self) -> int:
        rows = list(await self._read(Q["last_event_seq"]))
        return int(rows[0][0])

    async def get_event(self, event_id: str) -> Event | None:
        rows = list(await self._read(Q["get_event"], {"event_id": event_id}))
        return event_from_row(rows[0]) if rows else None

    async def count_events(self) -> int:
        rows = list(await self._read(Q["count_events"]))
        return int(rows[0][0])

    async def list_quarantine(self, *, source: str | None = None, limit: int = 100) -> list[QuarantineRow]:
        rows = await self._read(Q["list_quarantine"], {"source": source, "limit": limit})
        return [quarantine_from_row(r) for r in rows]

    async def get_quarantine(self, quarantine_id: int) -> QuarantineRow | None:
        rows = list(await self._read(Q["get_quarantine"], {"id": quarantine_id}))
        if not rows:
            return None
        return quarantine_from_row(rows[0], with_body=True)

    # ------------------------------------------------------------------------------------ deliveries

    async def claim_deliveries(
        self, owner: str, now: datetime, requests: Sequence[ClaimRequest]
    ) -> list[ClaimedDelivery]:
        now_s = db_ts(now)

        async def claim(conn: aiosqlite.Connection) -> list[int]:
            ids: list[int] = []
            for req in requests:
                rows = await conn.execute_fetchall(
                    Q["claim_due_per_key"] if req.per_key else Q["claim_due"],
                    {
                        "owner": owner,
                        "lease_until": db_ts(req.lease_until),
                        "subscriber": req.subscriber,
                        "now": now_s,
                        "limit": req.limit,
                    },
                )
                ids.extend(int(r[0]) for r in rows)
            return ids

        ids = await self.write(claim)
        if not ids:
            return []
        rows = await self._read(Q["claimed_details"], {"ids": orjson.dumps(ids).decode()})
        claimed = [claimed_from_row(r) for r in rows]
        claimed.sort(key=lambda c: c.id)
        return claimed

    async def renew_leases(
        self, owner: str, leases: Sequence[tuple[int, int | None]], lease_until: datetime
    ) -> set[int]:
        ids = [delivery_id for delivery_id, _token in leases]  # one process owns an SQLite store: the owner fences
        return {int(i) for i in await self._renew("renew_leases", ids, owner, lease_until)}

    async def release_leases(self, owner: str) -> int:
        async def release(conn: aiosqlite.Connection) -> int:
            cursor = await conn.execute(Q["release_leases"], {"owner": owner})
            return int(cursor.rowcount)

        return await self.write(release)

    async def shift_schedule(self, since: datetime, step_s: float) -> int:
        since_ts = db_ts(since)
        step = timedelta(seconds=step_s)

        def moved(ts: str | None) -> str | None:
            return db_ts(parse_ts(ts) + step) if ts is not None and ts > since_ts else ts

        async def shift(conn: aiosqlite.Connection) -> int:
            rows = await conn.execute_fetchall(Q["future_schedule"], {"since": since_ts})
            updates = [
                {"id": row[0], "next_attempt_at": moved(row[1]), "lease_expires_at": moved(row[2])} for row in rows
            ]
            await conn.executemany(Q["shift_schedule"], updates)
            return len(updates)

        return await self.write(shift)

    async def set_subscriber_disabled(self, subscriber: str, disabled: bool, reason: str | None) -> None:
        params = {"subscriber": subscriber, "disabled": int(disabled), "reason": reason, "now": db_ts(_now())}

        async def update(conn: aiosqlite.Connection) -> None:
            await conn.execute(Q["set_subscriber_disabled"], params)

        await self.write(update)

    async def heartbeat(self, instance: InstanceRecord, *, forget_after_s: float) -> None:
        now = _now()
        params = {
            "id": instance.id,
            "host": instance.host,
            "pid": instance.pid,
            "version": instance.version,
            "started_at": db_ts(instance.started_at),
            "now": db_ts(now),
            "poll_leases": instance.poll_leases,
            "deliveries_in_flight": instance.deliveries_in_flight,
        }
        cutoff = {"cutoff": db_ts(now - timedelta(seconds=forget_after_s))}

        async def beat(conn: aiosqlite.Connection) -> None:
            await conn.execute(Q["heartbeat_instance"], params)
            await conn.execute(Q["prune_instances"], cutoff)

        await self.write(beat)

    async def forget_instance(self, instance_id: str) -> None:
        async def forget(conn: aiosqlite.Connection) -> None:
            await conn.execute(Q["forget_instance"], {"id": instance_id})

        await self.write(forget)

    async def list_instances(self, *, live_within_s: float) -> list[InstanceRecord]:
        rows = await self._read(Q["list_instances"], {"cutoff": db_ts(_now() - timedelta(seconds=live_within_s))})
        return [InstanceRecord(r[0], r[1], r[2], r[3], parse_ts(r[4]), parse_ts(r[5]), r[6], r[7]) for r in rows]

    async def set_circuit_state(self, subscriber: str, state: str) -> None:
        params = {"subscriber": subscriber, "state": state, "now": db_ts(_now())}

        async def update(conn: aiosqlite.Connection) -> None:
            await conn.execute(Q["set_circuit_state"], params)

        await self.write(update)

    async def subscriber_states(self) -> dict[str, SubscriberState]:
        states: dict[str, dict[str, Any]] = {}
        for r in await self._read(Q["subscriber_states"]):
            states[r[0]] = {
                "subscriber": r[0],
                "disabled": bool(r[1]),
                "disabled_reason": r[2],
                "disabled_at": r[3],
                "last_success_at": r[4],
                "circuit_state": r[5],
                "circuit_changed_at": r[6],
            }
        for subscriber, state, count in await self._read(Q["delivery_counts"]):
            states.setdefault(subscriber, {"subscriber": subscriber})[state] = int(count)
        return {name: SubscriberState(**values) for name, values in states.items()}

    async def next_due_at(self) -> datetime | None:
        rows = list(await self._read(Q["next_due_at"]))
        return parse_ts(rows[0][0]) if rows and rows[0][0] else None

    async def oldest_pending_at(self, subscribers: Sequence[str]) -> dict[str, datetime]:
        oldest: dict[str, datetime] = {}
        for name in subscribers:
            rows = list(await self._read(Q["oldest_pending"], {"subscriber": name}))
            if rows:
                oldest[name] = parse_ts(rows[0][0])
        return oldest

    @staticmethod
    def _delivery_params(flt: DeliveryFilter) -> dict[str, Any]:
        return {
            "event_id": flt.event_id,
            "subscriber": flt.subscriber,
            "state": flt.state,
            "channel": flt.channel,
            "entity_key": flt.entity_key,
            "since": db_ts(flt.since) if flt.since else None,
            "until": db_ts(flt.until) if flt.until else None,
            "limit": flt.limit,
        }

    async def list_deliveries(self, flt: DeliveryFilter) -> list[DeliveryRow]:
        rows = await self._read(Q["list_deliveries"], self._delivery_params(flt))
        return [delivery_from_row(r) for r in rows]

    async def get_delivery(self, delivery_id: int) -> DeliveryRow | None:
        rows = list(await self._read(Q["get_delivery"], {"delivery_id": delivery_id}))
        return delivery_from_row(rows[0]) if rows else None

    async def list_attempts(self, delivery_id: int) -> list[dict[str, Any]]:
        rows = await self._read(Q["list_attempts"], {"delivery_id": delivery_id})
        return [attempt_from_row(r) for r in rows]

    async def oldest_pending_overall_at(self) -> datetime | None:
        rows = list(await self._read(Q["oldest_pending_created_at"]))
        return parse_ts(rows[0][0]) if rows and rows[0][0] else None

    async def make_due_now(self, delivery_id: int) -> bool:
        params = {"delivery_id": delivery_id, "now": db_ts(_now())}

        async def update(conn: aiosqlite.Connection) -> int:
            cursor = await conn.execute(Q["make_due_now"], params)
            return int(cursor.rowcount)

        changed = await self.write(update) > 0
        if changed:
            self._notify()
        return changed

    async def redrive(self, flt: DeliveryFilter) -> int:
        params = self._delivery_params(flt)
        params.pop("state")
        params.pop("limit")
        params["now"] = db_ts(_now())

        async def update(conn: aiosqlite.Connection) -> int:
            cursor = await conn.execute(Q["redrive_dead"], params)
            return int(cursor.rowcount)

        count = await self.write(update)
        if count:
            self._notify()
        return count

    @staticmethod
    def _event_params(flt: EventFilter, event_id: str | None) -> dict[str, Any]:
        return {
            "channel": flt.channel,
            "source": flt.source,
            "event_id": event_id,
            "entity_key": flt.entity_key,
            "since": db_ts(flt.since) if flt.since else None,
            "until": db_ts(flt.until) if flt.until else None,
        }

    async def events_page(
        self, flt: EventFilter, *, event_id: str | None, after_seq: int, limit: int
    ) -> list[ReplayEvent]:
        params = self._event_params(flt, event_id) | {"after_seq": after_seq, "limit": limit}
        rows = await self._read(Q["events_page"], params)
        return [replay_event_from_row(r) for r in rows]

    async def count_matching_events(self, flt: EventFilter, *, event_id: str | None) -> int:
        rows = list(await self._read(Q["count_events_matching"], self._event_params(flt, event_id)))
        return int(rows[0][0])

    async def insert_replay_deliveries(self, rows: Sequence[tuple[ReplayEvent, str]]) -> int:
        now = db_ts(_now())
        params = [
            {
                "event_id": ev.event_id,
                "subscriber": subscriber,
                "entity_key": ev.entity_key,
                "version_order": ev.version_order,
                "now": now,
            }
            for ev, subscriber in rows
        ]

        async def insert(conn: aiosqlite.Connection) -> int:
            await conn.executemany(Q["insert_replay_delivery"], params)
            return len(params)

        count = await self.write(insert)
        if count:
            self._notify()
        return count

    def _notify(self) -> None:
        for callback in self._commit_listeners:
            callback()

    # ------------------------------------------------------------------------------------ polling

    async def get_checkpoint(self, source: str, resource: str) -> Checkpoint | None:
        rows = list(await self._read(Q["get_checkpoint"], {"source": source, "resource": resource}))
        if not rows:
            return None
        high_water, last_key, state, _ = rows[0]
        return Checkpoint(high_water=high_water, last_key=last_key, state=orjson.loads(state or "{}"))

    async def record_hashes(self, source: str, resource: str, keys: Sequence[str]) -> dict[str, str]:
        if not keys:
            return {}
        found: dict[str, str] = {}
        for size, params in _in_list_params(list(keys), source=source, resource=resource):
            found.update((r[0], r[1]) for r in await self._read(_in_list_sql("record_hashes_for", size), params))
        return found

    async def known_record_keys(self, source: str, resource: str) -> set[str]:
        rows = await self._read(Q["all_record_keys"], {"source": source, "resource": resource})
        return {r[0] for r in rows}

    async def commit_poll(self, commit: PollCommit) -> list[IngestOutcome]:
        now = db_ts(_now())
        base = {"source": commit.source, "resource": commit.resource}
        checkpoint = {
            **base,
            "high_water": commit.checkpoint.high_water,
            "last_key": commit.checkpoint.last_key,
            "state": orjson.dumps(commit.checkpoint.state).decode(),
            "updated_at": now,
        }
        holder = self._op("ingest", items=commit.events)
        created = 0

        async def apply(conn: aiosqlite.Connection) -> list[IngestOutcome]:
            nonlocal created
            outcomes, created = await self._apply_ingest(conn, [holder]) if commit.events else ({holder: []}, 0)
            if commit.hashes:
                await conn.executemany(
                    Q["upsert_record_hash"],
                    [{**base, "record_key": k, "hash": h, "seen_at": now} for k, h in commit.hashes],
                )
            if commit.forget_keys:
                await conn.executemany(Q["delete_record_hash"], [{**base, "record_key": k} for k in commit.forget_keys])
            await conn.execute(Q["save_checkpoint"], checkpoint)
            if commit.shape is not None:
                await conn.execute(Q["save_observation"], _observation(commit.source, commit.resource, "shape",
                                                                       commit.shape, now))  # fmt: skip
            return outcomes[holder]

        result = await self.write(apply)
        if created:
            self._notify()
        return result

    async def get_observation(self, source: str, resource: str, kind: str) -> dict[str, Any] | None:
        rows = list(await self._read(Q["get_observation"], {"source": source, "resource": resource, "kind": kind}))
        if not rows:
            return None
        value = orjson.loads(rows[0][0])
        return value if isinstance(value, dict) else None

    async def commit_observation(
        self, source: str, resource: str, kind: str, value: Mapping[str, Any], events: Sequence[NewEvent] = ()
    ) -> list[IngestOutcome]:
        params = _observation(source, resource, kind, value, db_ts(_now()))
        holder = self._op("ingest", items=events)
        created = 0

        async def apply(conn: aiosqlite.Connection) -> list[IngestOutcome]:
            nonlocal created
            outcomes, created = await self._apply_ingest(conn, [holder]) if events else ({holder: []}, 0)
            await conn.execute(Q["save_observation"], params)
            return outcomes[holder]

        result = await self.write(apply)
        if created:
            self._notify()
        return result

    async def get_state(self, noun: str, entity_key: str) -> StateRecord | None:
        rows = list(await self._read(Q["get_entity_state"], {"noun": noun, "entity_key": entity_key}))
        return state_from_row(rows[0]) if rows else None

    async def list_state(self, noun: str, *, prefix: str = "", after: str = "", limit: int = 100) -> list[StateRecord]:
        params = {"noun": noun, "prefix": prefix, "after": after, "limit": limit}
        return [state_from_row(r) for r in await self._read(Q["list_entity_state"], params)]

    async def prune(self, cutoff: datetime, *, limit: int = 5000) -> int:
        params = {"cutoff": db_ts(cutoff), "limit": limit}

        async def delete(conn: aiosqlite.Connection) -> int:
            cursor = await conn.execute(Q["prune_events"], params)
            return int(cursor.rowcount)

        return await self.write(delete)

    # ------------------------------------------------------------------------------------ commands

    async def submit_command(self, command: NewCommand) -> tuple[CommandRow, bool]:
        params = {
            "id": command.id,
            "source": command.source,
            "command": command.command,
            "idempotency_key": command.idempotency_key,
            "body_hash": command.body_hash,
            "body": command.body,
            "order_key": command.order_key,
            "reference": command.reference,
            "now": db_ts(command.now),
        }

        async def insert(conn: aiosqlite.Connection) -> tuple[CommandRow, bool]:
            cursor = await conn.execute(Q["insert_command"], params)
            created = cursor.rowcount == 1
            rows = await conn.execute_fetchall(
                Q["command_by_key"], {"source": command.source, "idempotency_key": command.idempotency_key}
            )
            return command_from_row(next(iter(rows))), created

        return await self.write(insert)

    async def get_command(self, command_id: str) -> CommandRow | None:
        rows = list(await self._read(Q["command_by_id"], {"id": command_id}))
        return command_from_row(rows[0]) if rows else None

    async def claim_commands(
        self, owner: str, source: str, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[CommandRow]:
        params = {
            "owner": owner,
            "source": source,
            "now": db_ts(now),
            "lease_until": db_ts(lease_until),
            "limit": limit,
        }

        async def claim(conn: aiosqlite.Connection) -> list[CommandRow]:
            ids = [str(r[0]) for r in await conn.execute_fetchall(Q["claim_commands"], params)]
            found: list[CommandRow] = []
            for command_id in ids:
                rows = await conn.execute_fetchall(Q["command_by_id"], {"id": command_id})
                found.extend(command_from_row(r) for r in rows)
            return found

        claimed = await self.write(claim)
        return sorted(claimed, key=lambda c: (c.created_at, c.id))

    async def finish_command(
        self,
        command_id: str,
        owner: str,
        *,
        status: Literal["succeeded", "failed"],
        result: dict[str, Any] | None,
        error: dict[str, Any] | None,
        now: datetime,
        event: NewEvent | None,
    ) -> bool:
        params = {
            "id": command_id,
            "owner": owner,
            "status": status,
            "result": orjson.dumps(result).decode() if result is not None else None,
            "error": orjson.dumps(error).decode() if error is not None else None,
            "now": db_ts(now),
        }
        holder = self._op("ingest", items=[event] if event else [])
        created = 0

        async def apply(conn: aiosqlite.Connection) -> bool:
            nonlocal created
            cursor = await conn.execute(Q["finish_command"], params)
            if cursor.rowcount != 1:
                return False
            if event is not None:
                _, created = await self._apply_ingest(conn, [holder])
            return True

        done = await self.write(apply)
        if created:
            self._notify()
        return done

    async def reschedule_command(
        self, command_id: str, owner: str, *, next_attempt_at: datetime, error: dict[str, Any]
    ) -> bool:
        params = {
            "id": command_id,
            "owner": owner,
            "next_attempt_at": db_ts(next_attempt_at),
            "error": orjson.dumps(error).decode(),
        }

        async def update(conn: aiosqlite.Connection) -> bool:
            cursor = await conn.execute(Q["reschedule_command"], params)
            return bool(cursor.rowcount == 1)

        return await self.write(update)

    async def retry_command(self, command_id: str, now: datetime) -> bool:
        async def update(conn: aiosqlite.Connection) -> bool:
            cursor = await conn.execute(Q["retry_command"], {"id": command_id, "now": db_ts(now)})
            return bool(cursor.rowcount == 1)

        return await self.write(update)

    async def renew_command_leases(self, owner: str, command_ids: Sequence[str], lease_until: datetime) -> set[str]:
        return {str(i) for i in await self._renew("renew_command_leases", command_ids, owner, lease_until)}

    async def _renew(self, query: str, ids: Sequence[Any], owner: str, lease_until: datetime) -> list[Any]:
        """The ids among `ids` whose lease `owner` still holds, extended to `lease_until` by `query` (an
        `UPDATE … WHERE id IN (:ids) … RETURNING id`), a statement per chunk of ids."""
        if not ids:
            return []
        until = db_ts(lease_until)

        async def renew(conn: aiosqlite.Connection) -> list[Any]:
            renewed: list[Any] = []
            for size, params in _in_list_params(list(ids), owner=owner, lease_until=until):
                renewed.extend(r[0] for r in await conn.execute_fetchall(_in_list_sql(query, size), params))
            return renewed

        return await self.write(renew)

    async def release_command_leases(self, owner: str) -> int:
        async def release(conn: aiosqlite.Connection) -> int:
            cursor = await conn.execute(Q["release_command_leases"], {"owner": owner})
            return int(cursor.rowcount)

        return await self.write(release)

    async def list_commands(self, flt: CommandFilter) -> list[CommandRow]:
        params = {"source": flt.source, "status": flt.status, "command": flt.command, "limit": flt.limit}
        return [command_from_row(r) for r in await self._read(Q["list_commands"], params)]

    async def open_command_counts(self) -> dict[tuple[str, str], int]:
        return {(r[0], r[1]): int(r[2]) for r in await self._read(Q["count_open_commands"])}


def _now() -> datetime:
    return datetime.now(UTC)


async def _drop_over_budget(conn: aiosqlite.Connection, max_bytes: int, *, keep_id: int) -> tuple[int, int]:
    """Delete the oldest quarantine entries (never `keep_id`) until the total is within `max_bytes`.

    Returns (entries deleted, bytes held afterwards).
    """
    usage = int(next(iter(await conn.execute_fetchall(Q["quarantine_bytes"])))[0])
    excess = usage - max_bytes
    freed = 0
    last_id = 0
    while freed < excess:
        rows = list(
            await conn.execute_fetchall(Q["quarantine_oldest"], {"after_id": last_id, "keep_id": keep_id, "limit": 256})
        )
        if not rows:
            break  # only the newest entry is left: it is kept even when it alone exceeds the budget
        for row_id, size in rows:
            freed += int(size)
            last_id = int(row_id)
            if freed >= excess:
                break
    if not last_id:
        return 0, usage
    cursor = await conn.execute(Q["drop_quarantine_through"], {"last_id": last_id})
    return int(cursor.rowcount), usage - freed


def _create_private(path: Path) -> None:
    """Create the database file (and any missing directory) readable by the relay's user only.

    SQLite creates a new database 0644 and its -wal and -shm files with the database's mode, so creating the
    database 0600 first makes all three private. An existing file keeps the mode its owner gave it.
    """
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
            os.chmod(directory, 0o700)  # mkdir's mode passes through the umask
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
        finally:
            os.close(fd)

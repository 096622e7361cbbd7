"""PostgreSQL backend: a connection pool for reads, one batching writer per process (group commit), claims with
leases and fencing tokens so that any number of relay processes can share one database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg
import orjson
import structlog

from relay import metrics
from relay.events import Event, parse_ts, utc_text
from relay.store._sql import _SQL_DIR, migrations, queries
from relay.store._writer import GroupCommit, WriteOp
from relay.store.base import (
    DEFAULT_QUARANTINE_MAX_BYTES,
    Checkpoint,
    ClaimedDelivery,
    ClaimRequest,
    CommandFilter,
    CommandRow,
    Completion,
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

if TYPE_CHECKING:
    from relay.store.base import Deriver

__all__ = ["PostgresStore", "PostgresTarget", "postgres_problem", "postgres_target"]

log = structlog.get_logger(__name__)
T = TypeVar("T")
Q = queries("postgres")

# What a failed statement or a lost server raises: all of it means "not committed" to the caller.
_DB_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
_CONNECT_TIMEOUT_S = 10.0
_COMMAND_TIMEOUT_S = 60.0
_DROP_LOG_INTERVAL_S = 60.0
# Wake-ups across instances: one NOTIFY per window at most, whatever the commit rate (each NOTIFY takes a global
# lock at commit, so one per event would serialise every instance's commits).
_NOTIFY_CHANNEL = "relay_due"
_NOTIFY_COALESCE_S = 0.05
_LISTEN_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """A `postgresql://` store URL split into what asyncpg needs and what may be shown to people."""

    dsn: str
    password: str | None
    where: str  # host:port/database, never the user's password

    def __str__(self) -> str:
        return self.where


def postgres_target(url: str) -> PostgresTarget:
    """Parse a libpq-style URL. A `password_file=/path` query parameter is read here (first line, the password);
    `passfile=` and `PGPASSFILE` are read by the driver as libpq does.

    Raises:
        ValueError: not a postgresql:// URL, or the password file cannot be read.
    """
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"not a postgresql URL: {url.split(':', 1)[0]!r}")
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    password: str | None = None
    kept: list[tuple[str, str]] = []
    for key, value in params:
        if key == "password_file":
            try:
                text = Path(value).read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"cannot read store password file {value}: {exc.strerror or exc}") from None
            password = text.splitlines()[0] if text else ""
        else:
            kept.append((key, value))
    base = url.split("?", 1)[0]
    dsn = f"{base}?{urlencode(kept)}" if kept else base
    options = dict(kept)
    try:
        port = parts.port or int(options.get("port", 5432))
    except ValueError:
        raise ValueError("store.url: the port is not a number") from None
    host = parts.hostname or options.get("host") or "localhost"
    database = parts.path.lstrip("/") or (parts.username or "postgres")
    return PostgresTarget(dsn=dsn, password=password, where=f"{host}:{port}/{database}")


def postgres_problem(url: str, *, timeout_s: float = 5.0) -> str | None:
    """Why the relay could not use this PostgreSQL store now (bad URL, unreachable, refused login), or None.

    Connects once and runs `SELECT 1`, from a thread of its own so that it works with or without a running event
    loop. The answer names host:port/database, never the password.
    """
    try:
        target = postgres_target(url)
    except ValueError as exc:
        return f"store.url: {exc}"

    async def probe() -> None:
        conn = await asyncpg.connect(target.dsn, password=target.password, timeout=timeout_s)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    with ThreadPoolExecutor(1, thread_name_prefix="store-check") as pool:
        try:
            pool.submit(asyncio.run, probe()).result()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, ValueError) as exc:
            return f"store: cannot connect to PostgreSQL at {target}: {_describe(exc)}"
    return None


_WriteOp = WriteOp[asyncpg.Connection]


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows → one list per column, the shape `unnest($1::…[], $2::…[], …)` takes."""
    return [[row[i] for row in rows] for i in range(width)]


def _ts(value: datetime | None) -> str | None:
    return utc_text(value) if value is not None else None


def _now() -> datetime:
    return datetime.now(UTC)


class PostgresStore(GroupCommit[asyncpg.Connection], Store):
    """The shared store. Reads use a pool; writes of this process go through one group-commit writer."""

    dialect = "postgres"
    shared = True

    def __init__(
        self,
        url: str,
        *,
        batch_max: int = 512,
        pool_max: int = 8,
        quarantine_max_bytes: int = DEFAULT_QUARANTINE_MAX_BYTES,
    ) -> None:
        self.target = postgres_target(url)
        self._init_writer(batch_max)
        self.pool_max = pool_max
        self.quarantine_max_bytes = quarantine_max_bytes
        self._pool: asyncpg.Pool | None = None
        self._closed = False
        self._commit_listeners: list[Callable[[], None]] = []
        self._drops_unlogged = 0
        self._drop_logged_at = float("-inf")
        # Our own NOTIFYs carry this id, so an instance does not wake itself twice for its own commits.
        self.instance_id = uuid.uuid4().hex
        self._notify_wanted = asyncio.Event()
        self._notify_unsent = False  # set by a commit, cleared once a NOTIFY went out after it
        self._notifier_task: asyncio.Task[None] | None = None
        self._listener_task: asyncio.Task[None] | None = None
        self._listener_conn: asyncpg.Connection | None = None

    # ------------------------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        await self._connect()
        try:
            await self.migrate()
            async with self._acquire() as conn:
                usage = await conn.fetchval(Q["quarantine_bytes"])
        except BaseException:
            await self._close_pool()
            raise
        metrics.QUARANTINE_BYTES.set(int(usage))
        self._start_writer("postgres-writer")
        self._notifier_task = asyncio.create_task(self._notify_forever(), name="postgres-notify")
        if self._commit_listeners:
            self._listen()

    async def _connect(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.target.dsn,
                password=self.target.password,
                min_size=1,
                max_size=self.pool_max,
                timeout=_CONNECT_TIMEOUT_S,
                # A statement that gets no answer (a server gone silent) fails instead of stalling the writer.
                command_timeout=_COMMAND_TIMEOUT_S,
                server_settings={"application_name": "erp-relay"},
            )
        except _DB_ERRORS as exc:  # TimeoutError (connect_timeout) is an OSError
            raise StoreUnavailable(f"cannot connect to PostgreSQL at {self.target}: {_describe(exc)}") from None

    async def migrate(self) -> int:
        """Apply pending migrations under an advisory lock; returns the schema version.

        Raises:
            StoreUnavailable: the server is unreachable, or its schema is newer than this relay knows.
        """
        known = migrations("postgres")
        newest_known = known[-1].version if known else 0
        try:
            async with self._acquire() as conn, conn.transaction():
                await conn.execute(Q["migration_lock"])
                await conn.execute(Q["create_migrations_table"])
                applied = {int(r[0]) for r in await conn.fetch(Q["applied_migrations"])}
                if applied and max(applied) > newest_known:
                    raise StoreUnavailable(
                        f"the database at {self.target} has schema version {max(applied)}, newer than this relay "
                        f"knows ({newest_known}): run a relay version at least as new as the one that migrated it"
                    )
                for migration in known:
                    if migration.version in applied:
                        continue
                    # The whole file as one script: function bodies contain semicolons.
                    path = _SQL_DIR / "postgres" / "migrations" / f"{migration.version:04d}_{migration.name}.sql"
                    await conn.execute(path.read_text(encoding="utf-8"))
                    await conn.execute(Q["record_migration"], migration.version, migration.name, utc_text(_now()))
                    log.info("migration applied", version=migration.version, name=migration.name)
                    applied.add(migration.version)
                return max(applied, default=0)
        except _DB_ERRORS as exc:
            raise StoreUnavailable(f"cannot migrate the database at {self.target}: {_describe(exc)}") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stop_writer()
        for task in (self._notifier_task, self._listener_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._notify_unsent:  # the last commits (a `relay replay` about to exit) still wake the others
            await self._send_notify()
        if self._listener_conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener_conn.close(), timeout=5.0)
        await self._close_pool()

    async def _close_pool(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), timeout=5.0)
            self._pool.terminate()
            self._pool = None

    def _acquire(self) -> Any:
        if self._pool is None:
            raise StoreUnavailable("the store is closed")
        return self._pool.acquire()

    def add_commit_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every commit that created due deliveries: this process's at once, another
        instance's (or a `relay replay`'s) when its NOTIFY arrives; polling stays the backstop."""
        self._commit_listeners.append(callback)
        if self._writer_running:
            self._listen()

    def _notify(self) -> None:
        """Deliveries became due in a commit of this process: wake its listeners now, the other instances soon."""
        self._wake_local()
        self._notify_unsent = True
        self._notify_wanted.set()

    def _wake_local(self) -> None:
        for callback in self._commit_listeners:
            callback()

    async def _notify_forever(self) -> None:
        while True:
            await self._notify_wanted.wait()
            self._notify_wanted.clear()
            await self._send_notify()
            # Coalescing: commits during this window share the next NOTIFY. A rate limit, not synchronisation.
            await asyncio.sleep(_NOTIFY_COALESCE_S)

    async def _send_notify(self) -> None:
        self._notify_wanted.clear()
        self._notify_unsent = False
        try:
            async with self._acquire() as conn:
                await conn.execute(Q["notify_due"], _NOTIFY_CHANNEL, self.instance_id)
        except asyncio.CancelledError:
            self._notify_unsent = True  # close() interrupted it: close() sends it
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, StoreUnavailable) as exc:
            # Only a hint: the other instances find the deliveries at their next poll.
            log.info("wake-up notification not sent", error=_describe(exc))

    def _listen(self) -> None:
        if self._listener_task is None:
            self._listener_task = asyncio.create_task(self._listen_forever(), name="postgres-listen")

    async def _listen_forever(self) -> None:
        """Hold one connection that LISTENs for other instances' wake-ups; reconnect when it is lost."""
        while True:
            try:
                conn = await asyncpg.connect(self.target.dsn, password=self.target.password, timeout=_CONNECT_TIMEOUT_S)
            except _DB_ERRORS as exc:
                log.info("cannot listen for wake-ups; polling meanwhile", error=_describe(exc))
            else:
                self._listener_conn = conn
                try:
                    await self._listen_on(conn)
                except _DB_ERRORS as exc:
                    log.info("wake-up connection failed; reconnecting", error=_describe(exc))
                finally:
                    self._listener_conn = None
                    conn.terminate()
            await asyncio.sleep(_LISTEN_RETRY_S)  # reconnect back-off; the dispatcher keeps polling meanwhile

    async def _listen_on(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(_NOTIFY_CHANNEL, self._on_notification)
        self._wake_local()  # whatever became due while nobody listened
        await lost.wait()
        log.info("wake-up connection lost; reconnecting")

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        if payload != self.instance_id:
            self._wake_local()

    # ------------------------------------------------------------------------------------ the writer

    async def _flush(self, batch: list[_WriteOp]) -> None:
        results: dict[_WriteOp, Any] = {}
        errors: dict[_WriteOp, BaseException] = {}
        created = 0
        started = time.perf_counter()
        try:
            async with self._acquire() as conn:
                ingest_ops = [op for op in batch if op.kind == "ingest"]
                try:
                    async with conn.transaction():
                        created = await self._apply_batch(conn, batch, ingest_ops, results, errors, isolated=False)
                except asyncpg.PostgresError as exc:
                    if not ingest_ops:
                        raise
                    # Start over with a savepoint per ingest request, so the one that broke the batch fails alone.
                    log.warning("ingest batch failed; retrying each request alone", error=str(exc), batch=len(batch))
                    results.clear()
                    errors.clear()
                    async with conn.transaction():
                        created = await self._apply_batch(conn, batch, ingest_ops, results, errors, isolated=True)
                except BaseException as exc:
                    if not isinstance(exc, asyncpg.PostgresError):
                        # The connection itself broke (server gone, protocol state lost): never hand it out again.
                        conn.terminate()
                    raise
        except Exception as exc:  # whatever broke, the batch was not committed: fail it and keep writing
            log.error("commit failed", error=_describe(exc), batch=len(batch))
            self._fail(batch, StoreUnavailable(f"commit failed: {_describe(exc)}"))
            return
        self._settle(batch, results, errors, started)
        if created:
            self._notify()

    async def _apply_batch(
        self,
        conn: asyncpg.Connection,
        batch: list[_WriteOp],
        ingest_ops: list[_WriteOp],
        results: dict[_WriteOp, Any],
        errors: dict[_WriteOp, BaseException],
        *,
        isolated: bool,
    ) -> int:
        """Everything of one group commit, inside the caller's transaction; returns how many deliveries it created."""
        created = 0
        if ingest_ops and not isolated:
            outcomes, created = await _apply_ingest(conn, [op.items for op in ingest_ops], self.deriver)
            results.update(zip(ingest_ops, outcomes, strict=True))
        elif ingest_ops:
            for op in ingest_ops:
                try:
                    async with conn.transaction():  # a savepoint inside the batch's transaction
                        (outcome,), op_created = await _apply_ingest(conn, [op.items], self.deriver)
                except asyncpg.PostgresError as exc:
                    ids = [item.event.event_id for item in op.items][:5]
                    log.error("event not stored", error=str(exc), event_ids=ids)
                    errors[op] = StoreUnavailable(f"the event was not stored: {exc}")
                else:
                    results[op] = outcome
                    created += op_created
        completions = [c for op in batch if op.kind == "complete" for c in op.completions]
        if completions:
            await _apply_completions(conn, completions)
        for op in batch:
            if op.kind != "call":
                continue
            assert op.fn is not None
            try:
                async with conn.transaction():
                    results[op] = await op.fn(conn)
            except asyncpg.PostgresError as exc:
                # Refused by the server (read-only, out of disk, a constraint): not committed, callers answer 503.
                errors[op] = StoreUnavailable(f"the write was refused: {_describe(exc)}")
            except (StoreUnavailable, ValueError) as exc:
                errors[op] = exc
        return created

    # ------------------------------------------------------------------------------------ writes

    async def ingest(self, items: Sequence[NewEvent]) -> list[IngestOutcome]:
        if not items:
            return []
        op = self._op("ingest", items=items, size=len(items))
        result: list[IngestOutcome] = await self._submit(op)
        return result

    async def quarantine(self, entry: QuarantineEntry) -> int:
        details = orjson.dumps(entry.details).decode()
        size = len(entry.body) + len(entry.reason.encode()) + len(details.encode())
        args = (
            utc_text(entry.received_at),
            entry.source,
            entry.channel,
            entry.reason,
            details,
            entry.content_type,
            size,
            entry.body,
        )
        max_bytes = self.quarantine_max_bytes

        async def insert(conn: asyncpg.Connection) -> tuple[int, int, int]:
            quarantine_id = int(await conn.fetchval(Q["insert_quarantine"], *args))
            # In the insert's transaction: the database never holds more than the budget, even between prunes.
            dropped, usage = await _drop_over_budget(conn, max_bytes, keep_id=quarantine_id)
            return quarantine_id, dropped, usage

        quarantine_id, dropped, usage = await self.write(insert)
        metrics.QUARANTINE_BYTES.set(usage)
        if dropped:
            metrics.labelled(metrics.QUARANTINE_DROPPED, "budget").inc(dropped)
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
        return quarantine_id

    async def prune_quarantine(self, cutoff: datetime, *, limit: int = 1000) -> int:
        async def delete(conn: asyncpg.Connection) -> tuple[int, int]:
            status = await conn.execute(Q["prune_quarantine"], utc_text(cutoff), limit)
            return _rowcount(status), int(await conn.fetchval(Q["quarantine_bytes"]))

        deleted, usage = await self.write(delete)
        metrics.QUARANTINE_BYTES.set(usage)
        if deleted:
            metrics.labelled(metrics.QUARANTINE_DROPPED, "retention").inc(deleted)
        return deleted

    async def delete_quarantine(self, quarantine_id: int) -> bool:
        async def delete(conn: asyncpg.Connection) -> bool:
            return _rowcount(await conn.execute(Q["delete_quarantine"], quarantine_id)) > 0

        return await self.write(delete)

    # ------------------------------------------------------------------------------------ ConfirmBODs

    async def enqueue_confirm(self, entry: ConfirmEntry, *, max_pending: int) -> int | None:
        args = (entry.source, utc_text(entry.created_at), entry.bod_id, entry.parameters, entry.payload)

        async def insert(conn: asyncpg.Connection) -> int | None:
            # Counted under a per-source lock in the insert's transaction: the bound holds however many refusals
            # arrive at once, on however many instances.
            await conn.execute(Q["confirm_source_lock"], entry.source)
            if int(await conn.fetchval(Q["count_ion_confirms"], entry.source)) >= max_pending:
                return None
            return int(await conn.fetchval(Q["insert_ion_confirm"], *args))

        return await self.write(insert)

    async def due_confirms(self, now: datetime, *, limit: int) -> list[ConfirmRow]:
        rows = await self._fetch(Q["due_ion_confirms"], utc_text(now), limit)
        return [confirm_from_row(r) for r in rows]

    async def next_confirm_at(self) -> datetime | None:
        value = (await self._fetch(Q["next_ion_confirm_at"]))[0][0]
        return parse_ts(value) if value else None

    async def finish_confirm(self, confirm_id: int) -> None:
        async def delete(conn: asyncpg.Connection) -> None:
            await conn.execute(Q["delete_ion_confirm"], confirm_id)

        await self.write(delete)

    async def retry_confirm(self, confirm_id: int, *, attempts: int, next_attempt_at: datetime, error: str) -> None:
        async def update(conn: asyncpg.Connection) -> None:
            await conn.execute(Q["retry_ion_confirm"], confirm_id, attempts, utc_text(next_attempt_at), error)

        await self.write(update)

    # ------------------------------------------------------------------------------------ reads

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            async with self._acquire() as conn:
                rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
                return rows
        except _DB_ERRORS as exc:
            raise StoreUnavailable(f"read failed: {_describe(exc)}") from None

    async def ping(self) -> None:
        async def probe(conn: asyncpg.Connection) -> None:
            # A real write each time: a server in recovery, read-only or out of disk still answers SELECT 1.
            await conn.execute(Q["touch_store_probe"], utc_text(_now()))

        await self.write(probe)

    async def schema_version(self) -> int:
        rows = await self._fetch(Q["applied_migrations"])
        return int(rows[-1][0]) if rows else 0

    async def list_events(self, flt: EventFilter) -> list[Event]:
        return [event for _, event in await self.list_events_after(flt, after_seq=0)]

    async def list_events_after(self, flt: EventFilter, *, after_seq: int) -> list[tuple[int, Event]]:
        rows = await self._fetch(
            Q["list_events_newest" if flt.newest_first else "list_events"],
            flt.channel,
            flt.source,
            flt.entity_key,
            flt.event_id,
            _ts(flt.since),
            _ts(flt.until),
            after_seq,
            flt.limit,
        )
        return [(int(r[0]), event_from_row(tuple(r)[1:])) for r in rows]

    async def last_event_seq(self) -> int:
        return int((await self._fetch(Q["last_event_seq"]))[0][0])

    async def get_event(self, event_id: str) -> Event | None:
        rows = await self._fetch(Q["get_event"], event_id)
        return event_from_row(rows[0]) if rows else None

    async def count_events(self) -> int:
        return int((await self._fetch(Q["count_events"]))[0][0])

    async def list_quarantine(self, *, source: str | None = None, limit: int = 100) -> list[QuarantineRow]:
        rows = await self._fetch(Q["list_quarantine"], source, limit)
        return [quarantine_from_row(r) for r in rows]

    async def get_quarantine(self, quarantine_id: int) -> QuarantineRow | None:
        rows = await self._fetch(Q["get_quarantine"], quarantine_id)
        if not rows:
            return None
        return quarantine_from_row(rows[0], with_body=True)

    # ------------------------------------------------------------------------------------ deliveries

    async def claim_deliveries(
        self, owner: str, now: datetime, requests: Sequence[ClaimRequest]
    ) -> list[ClaimedDelivery]:
        now_s = utc_text(now)

        async def claim(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            rows: list[asyncpg.Record] = []
            for req in requests:
                rows.extend(
                    await conn.fetch(
                        Q["claim_due_per_key"] if req.per_key else Q["claim_due"],
                        owner,
                        utc_text(req.lease_until),
                        req.subscriber,
                        now_s,
                        req.limit,
                    )
                )
            return rows

        rows = await self.write(claim)
        claimed = [claimed_from_row(r, lease_token=r[14]) for r in rows]
        claimed.sort(key=lambda c: c.id)
        return claimed

    async def renew_leases(
        self, owner: str, leases: Sequence[tuple[int, int | None]], lease_until: datetime
    ) -> set[int]:
        if not leases:
            return set()
        ids = [delivery_id for delivery_id, _ in leases]
        tokens = [token for _, token in leases]

        async def renew(conn: asyncpg.Connection) -> set[int]:
            rows = await conn.fetch(Q["renew_leases"], owner, utc_text(lease_until), ids, tokens)
            return {int(r[0]) for r in rows}

        return await self.write(renew)

    async def release_leases(self, owner: str) -> int:
        async def release(conn: asyncpg.Connection) -> int:
            return _rowcount(await conn.execute(Q["release_leases"], owner))

        return await self.write(release)

    async def shift_schedule(self, since: datetime, step_s: float) -> int:
        since_ts = utc_text(since)
        step = timedelta(seconds=step_s)

        def moved(ts: str | None) -> str | None:
            return utc_text(parse_ts(ts) + step) if ts is not None and ts > since_ts else ts

        async def shift(conn: asyncpg.Connection) -> int:
            rows = await conn.fetch(Q["future_schedule"], since_ts)
            updates = [(r[0], moved(r[1]), moved(r[2])) for r in rows]
            if updates:
                await conn.execute(Q["shift_schedule"], *_columns(updates, 3))
            return len(updates)

        return await self.write(shift)

    async def set_subscriber_disabled(self, subscriber: str, disabled: bool, reason: str | None) -> None:
        async def update(conn: asyncpg.Connection) -> None:
            await conn.execute(Q["set_subscriber_disabled"], subscriber, disabled, reason, utc_text(_now()))

        await self.write(update)

    async def set_circuit_state(self, subscriber: str, state: str) -> None:
        async def update(conn: asyncpg.Connection) -> None:
            await conn.execute(Q["set_circuit_state"], subscriber, state, utc_text(_now()))

        await self.write(update)

    async def subscriber_states(self) -> dict[str, SubscriberState]:
        states: dict[str, dict[str, Any]] = {}
        for r in await self._fetch(Q["subscriber_states"]):
            states[r[0]] = {
                "subscriber": r[0],
                "disabled": bool(r[1]),
                "disabled_reason": r[2],
                "disabled_at": r[3],
                "last_success_at": r[4],
                "circuit_state": r[5],
                "circuit_changed_at": r[6],
            }
        for subscriber, state, count in await self._fetch(Q["delivery_counts"]):
            states.setdefault(subscriber, {"subscriber": subscriber})[state] = int(count)
        return {name: SubscriberState(**values) for name, values in states.items()}

    async def next_due_at(self) -> datetime | None:
        rows = await self._fetch(Q["next_due_at"])
        return parse_ts(rows[0][0]) if rows and rows[0][0] else None

    async def oldest_pending_at(self, subscribers: Sequence[str]) -> dict[str, datetime]:
        rows = await self._fetch(Q["oldest_pending"], list(subscribers)) if subscribers else []
        return {r[0]: parse_ts(r[1]) for r in rows if r[1] is not None}

    async def list_deliveries(self, flt: DeliveryFilter) -> list[DeliveryRow]:
        rows = await self._fetch(
            Q["list_deliveries"],
            flt.event_id,
            flt.subscriber,
            flt.state,
            flt.channel,
            _ts(flt.since),
            _ts(flt.until),
            flt.entity_key,
            flt.limit,
        )
        return [delivery_from_row(r) for r in rows]

    async def get_delivery(self, delivery_id: int) -> DeliveryRow | None:
        rows = await self._fetch(Q["get_delivery"], delivery_id)
        return delivery_from_row(rows[0]) if rows else None

    async def list_attempts(self, delivery_id: int) -> list[dict[str, Any]]:
        rows = await self._fetch(Q["list_attempts"], delivery_id)
        return [attempt_from_row(r) for r in rows]

    async def oldest_pending_overall_at(self) -> datetime | None:
        value = (await self._fetch(Q["oldest_pending_created_at"]))[0][0]
        return parse_ts(value) if value else None

    async def make_due_now(self, delivery_id: int) -> bool:
        now = utc_text(_now())

        async def update(conn: asyncpg.Connection) -> int:
            return _rowcount(await conn.execute(Q["make_due_now"], delivery_id, now))

        changed = await self.write(update) > 0
        if changed:
            self._notify()
        return changed

    async def redrive(self, flt: DeliveryFilter) -> int:
        args = (flt.event_id, flt.subscriber, flt.entity_key, _ts(flt.since), _ts(flt.until), flt.channel)

        async def update(conn: asyncpg.Connection) -> int:
            return _rowcount(await conn.execute(Q["redrive_dead"], *args, utc_text(_now())))

        count = await self.write(update)
        if count:
            self._notify()
        return count

    @staticmethod
    def _event_args(flt: EventFilter, event_id: str | None) -> tuple[Any, ...]:
        return (flt.channel, event_id, flt.entity_key, _ts(flt.since), _ts(flt.until), flt.source)

    async def events_page(
        self, flt: EventFilter, *, event_id: str | None, after_seq: int, limit: int
    ) -> list[ReplayEvent]:
        rows = await self._fetch(Q["events_page"], *self._event_args(flt, event_id), after_seq, limit)
        return [replay_event_from_row(r) for r in rows]

    async def count_matching_events(self, flt: EventFilter, *, event_id: str | None) -> int:
        rows = await self._fetch(Q["count_events_matching"], *self._event_args(flt, event_id))
        return int(rows[0][0])

    async def insert_replay_deliveries(self, rows: Sequence[tuple[ReplayEvent, str]]) -> int:
        if not rows:
            return 0
        columns = _columns([(ev.event_id, sub, ev.entity_key, ev.version_order) for ev, sub in rows], 4)
        now = utc_text(_now())

        async def insert(conn: asyncpg.Connection) -> int:
            return _rowcount(await conn.execute(Q["insert_replay_deliveries"], *columns, now))

        count = await self.write(insert)
        if count:
            self._notify()
        return count

    # ------------------------------------------------------------------------------------ polling

    async def get_checkpoint(self, source: str, resource: str) -> Checkpoint | None:
        rows = await self._fetch(Q["get_checkpoint"], source, resource)
        if not rows:
            return None
        high_water, last_key, state, _ = rows[0]
        return Checkpoint(high_water=high_water, last_key=last_key, state=orjson.loads(state or "{}"))

    async def record_hashes(self, source: str, resource: str, keys: Sequence[str]) -> dict[str, str]:
        if not keys:
            return {}
        rows = await self._fetch(Q["record_hashes_for"], source, resource, list(keys))
        return {r[0]: r[1] for r in rows}

    async def known_record_keys(self, source: str, resource: str) -> set[str]:
        return {r[0] for r in await self._fetch(Q["all_record_keys"], source, resource)}

    async def commit_poll(self, commit: PollCommit) -> list[IngestOutcome]:
        now = utc_text(_now())
        cp = commit.checkpoint
        created = 0
        deriver = self.deriver

        async def apply(conn: asyncpg.Connection) -> list[IngestOutcome]:
            nonlocal created
            outcomes: list[IngestOutcome] = []
            if commit.events:
                (outcomes,), created = await _apply_ingest(conn, [commit.events], deriver)
            if commit.hashes:
                keys, hashes = _columns(list(commit.hashes), 2)
                await conn.execute(Q["upsert_record_hashes"], commit.source, commit.resource, keys, hashes, now)
            if commit.forget_keys:
                await conn.execute(Q["delete_record_hashes"], commit.source, commit.resource, list(commit.forget_keys))
            await conn.execute(
                Q["save_checkpoint"],
                commit.source,
                commit.resource,
                cp.high_water,
                cp.last_key,
                orjson.dumps(cp.state).decode(),
                now,
            )
            if commit.shape is not None:
                await conn.execute(Q["save_observation"], *_observation(commit.source, commit.resource, "shape",
                                                                        commit.shape, now))  # fmt: skip
            return outcomes

        result = await self.write(apply)
        if created:
            self._notify()
        return result

    async def get_observation(self, source: str, resource: str, kind: str) -> dict[str, Any] | None:
        rows = await self._fetch(Q["get_observation"], source, resource, kind)
        if not rows:
            return None
        value = orjson.loads(rows[0][0])
        return value if isinstance(value, dict) else None

    async def commit_observation(
        self, source: str, resource: str, kind: str, value: Mapping[str, Any], events: Sequence[NewEvent] = ()
    ) -> list[IngestOutcome]:
        args = _observation(source, resource, kind, value, utc_text(_now()))
        created = 0
        deriver = self.deriver

        async def apply(conn: asyncpg.Connection) -> list[IngestOutcome]:
            nonlocal created
            outcomes: list[IngestOutcome] = []
            if events:
                (outcomes,), created = await _apply_ingest(conn, [events], deriver)
            await conn.execute(Q["save_observation"], *args)
            return outcomes

        result = await self.write(apply)
        if created:
            self._notify()
        return result

    # ------------------------------------------------------------------------------------ instances

    async def heartbeat(self, instance: InstanceRecord, *, forget_after_s: float) -> None:
        i = instance

        async def beat(conn: asyncpg.Connection) -> None:
            await conn.execute(
                Q["heartbeat_instance"],
                i.id,
                i.host,
                i.pid,
                i.version,
                i.started_at,
                i.poll_leases,
                i.deliveries_in_flight,
            )
            await conn.execute(Q["prune_instances"], forget_after_s)

        await self.write(beat)

    async def forget_instance(self, instance_id: str) -> None:
        async def forget(conn: asyncpg.Connection) -> None:
            await conn.execute(Q["forget_instance"], instance_id)

        await self.write(forget)

    async def list_instances(self, *, live_within_s: float) -> list[InstanceRecord]:
        rows = await self._fetch(Q["list_instances"], live_within_s)
        return [InstanceRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows]

    # ------------------------------------------------------------------------------------ shared rate limits

    async def take_rate_tokens(
        self, subscriber: str, rate_per_s: float, burst: float, wanted: int
    ) -> tuple[int, float]:
        # Outside the group-commit writer: a one-row autocommit upsert, so a busy ingest batch does not hold
        # deliveries back; the row lock serialises the instances.
        rows = await self._fetch(Q["take_rate_tokens"], subscriber, rate_per_s, burst, wanted)
        return int(rows[0][0]), float(rows[0][1])

    async def return_rate_tokens(self, subscriber: str, count: int, burst: float) -> None:
        if count > 0:
            await self._fetch(Q["return_rate_tokens"], subscriber, float(count), burst)

    # ------------------------------------------------------------------------------------ poll leases

    async def hold_poll_lease(self, source: str, resource: str, owner: str, ttl_s: float) -> bool:
        async def hold(conn: asyncpg.Connection) -> bool:
            return await conn.fetchval(Q["hold_poll_lease"], source, resource, owner, ttl_s) is not None

        return await self.write(hold)

    async def renew_poll_leases(self, owner: str, ttl_s: float) -> int:
        async def renew(conn: asyncpg.Connection) -> int:
            return _rowcount(await conn.execute(Q["renew_poll_leases"], owner, ttl_s))

        return await self.write(renew)

    async def release_poll_leases(self, owner: str) -> None:
        async def release(conn: asyncpg.Connection) -> None:
            await conn.execute(Q["release_poll_leases"], owner)

        await self.write(release)

    # ------------------------------------------------------------------------------------ current state

    async def get_state(self, noun: str, entity_key: str) -> StateRecord | None:
        rows = await self._fetch(Q["get_entity_state"], noun, entity_key)
        return state_from_row(rows[0]) if rows else None

    async def list_state(self, noun: str, *, prefix: str = "", after: str = "", limit: int = 100) -> list[StateRecord]:
        return [state_from_row(r) for r in await self._fetch(Q["list_entity_state"], noun, prefix, after, limit)]

    async def prune(self, cutoff: datetime, *, limit: int = 5000) -> int:
        async def delete(conn: asyncpg.Connection) -> int:
            return _rowcount(await conn.execute(Q["prune_events"], utc_text(cutoff), limit))

        return await self.write(delete)

    # ------------------------------------------------------------------------------------ commands

    async def submit_command(self, command: NewCommand) -> tuple[CommandRow, bool]:
        args = (
            command.id,
            command.source,
            command.command,
            command.idempotency_key,
            command.body_hash,
            command.body,
            command.order_key,
            command.reference,
            utc_text(command.now),
        )

        async def insert(conn: asyncpg.Connection) -> tuple[CommandRow, bool]:
            created = _rowcount(await conn.execute(Q["insert_command"], *args)) == 1
            row = await conn.fetchrow(Q["command_by_key"], command.source, command.idempotency_key)
            if row is None:  # the conflicting row is committed before ON CONFLICT gives way: never absent
                raise StoreUnavailable(f"command {command.idempotency_key!r} was neither stored nor found")
            return command_from_row(row), created

        return await self.write(insert)

    async def get_command(self, command_id: str) -> CommandRow | None:
        rows = await self._fetch(Q["command_by_id"], command_id)
        return command_from_row(rows[0]) if rows else None

    async def claim_commands(
        self, owner: str, source: str, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[CommandRow]:
        args = (owner, utc_text(lease_until), source, utc_text(now), limit)

        async def claim(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            rows: list[asyncpg.Record] = await conn.fetch(Q["claim_commands"], *args)
            return rows

        claimed = [command_from_row(r) for r in await self.write(claim)]
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
        args = (
            command_id,
            owner,
            status,
            orjson.dumps(result).decode() if result is not None else None,
            orjson.dumps(error).decode() if error is not None else None,
            utc_text(now),
        )
        created = 0
        deriver = self.deriver

        async def apply(conn: asyncpg.Connection) -> bool:
            nonlocal created
            if _rowcount(await conn.execute(Q["finish_command"], *args)) != 1:
                return False  # the lease was lost: neither the outcome nor its event is written
            if event is not None:
                _, created = await _apply_ingest(conn, [[event]], deriver)
            return True

        done = await self.write(apply)
        if created:
            self._notify()
        return done

    async def reschedule_command(
        self, command_id: str, owner: str, *, next_attempt_at: datetime, error: dict[str, Any]
    ) -> bool:
        args = (command_id, owner, utc_text(next_attempt_at), orjson.dumps(error).decode())

        async def update(conn: asyncpg.Connection) -> bool:
            return _rowcount(await conn.execute(Q["reschedule_command"], *args)) == 1

        return await self.write(update)

    async def retry_command(self, command_id: str, now: datetime) -> bool:
        async def update(conn: asyncpg.Connection) -> bool:
            return _rowcount(await conn.execute(Q["retry_command"], command_id, utc_text(now))) == 1

        return await self.write(update)

    async def renew_command_leases(self, owner: str, command_ids: Sequence[str], lease_until: datetime) -> set[str]:
        if not command_ids:
            return set()

        async def renew(conn: asyncpg.Connection) -> set[str]:
            rows = await conn.fetch(Q["renew_command_leases"], owner, utc_text(lease_until), list(command_ids))
            return {str(r[0]) for r in rows}

        return await self.write(renew)

    async def release_command_leases(self, owner: str) -> int:
        async def release(conn: asyncpg.Connection) -> int:
            return _rowcount(await conn.execute(Q["release_command_leases"], owner))

        return await self.write(release)

    async def list_commands(self, flt: CommandFilter) -> list[CommandRow]:
        rows = await self._fetch(Q["list_commands"], flt.source, flt.status, flt.command, flt.limit)
        return [command_from_row(r) for r in rows]

    async def open_command_counts(self) -> dict[tuple[str, str], int]:
        return {(r[0], r[1]): int(r[2]) for r in await self._fetch(Q["count_open_commands"])}


def _observation(
    source: str, resource: str, kind: str, value: Mapping[str, Any], now: str
) -> tuple[str, str, str, str, str]:
    """The arguments of `save_observation`: the value as JSON text, as SQLite keeps it."""
    return source, resource, kind, orjson.dumps(dict(value)).decode(), now


# ---------------------------------------------------------------------------------------- batch statements


async def _apply_ingest(
    conn: asyncpg.Connection, requests: Sequence[Sequence[NewEvent]], deriver: Deriver | None = None
) -> tuple[list[list[IngestOutcome]], int]:
    """Insert the events of several ingest requests, their deliveries, their keys' current state and what the
    rules derive from them: one statement per table.

    Ids stored before (by this or another instance, even one committing right now) are duplicates. Returns the
    outcomes per request and how many deliveries were created.
    """
    firsts: dict[str, NewEvent] = {}
    for items in requests:
        for item in items:
            firsts.setdefault(item.event.event_id, item)
    if firsts:
        # Held until commit: event inserts (and the rule evaluation below) go one transaction at a time across
        # instances, so `seq` becomes visible in order and rule states are read current.
        await conn.execute(Q["event_insert_lock"])
    inserted = await _insert_events(conn, list(firsts.values()))
    rows = _IngestRows()
    outcomes: list[list[IngestOutcome]] = []
    accepted: set[str] = set()
    triggers: list[Event] = []
    for items in requests:
        request_outcomes = []
        for item in items:
            ev = item.event
            if ev.event_id not in inserted or ev.event_id in accepted:
                request_outcomes.append(IngestOutcome(ev.event_id, "duplicate"))
                continue
            accepted.add(ev.event_id)
            rows.add(item)
            if deriver is not None and ev.entity_key is not None and ev.channel in deriver.channels:
                triggers.append(ev)
            request_outcomes.append(IngestOutcome(ev.event_id, "accepted", len(item.deliveries)))
        outcomes.append(request_outcomes)
    if triggers and deriver is not None:
        # Derived events join this transaction: a crash loses both or neither, and a redelivered trigger is a
        # duplicate that derives nothing again.
        derivation = deriver.derive(triggers, await _rule_states(conn, triggers))
        derived = {item.event.event_id: item for item in derivation.events if item.event.event_id not in accepted}
        stored = await _insert_events(conn, list(derived.values()))
        for event_id, item in derived.items():
            if event_id in stored:
                accepted.add(event_id)
                rows.add(item)
        if derivation.states:
            latest = {(st.rule, st.entity_key): st for st in derivation.states}  # one row per (rule, key)
            states = [(st.rule, st.entity_key, st.active, st.version_order, st.event_id) for st in latest.values()]
            await conn.execute(Q["upsert_rule_state"], *_columns(states, 5))
    if rows.supersede:
        # Before the inserts: the new versions themselves must not be superseded.
        await conn.execute(Q["supersede_older"], *_columns(rows.supersede, 5))
    if rows.deliveries:
        await conn.execute(Q["insert_deliveries_checked"], *_columns(rows.deliveries, 6))
    if rows.states:
        await conn.execute(Q["upsert_entity_state"], *_columns(list(rows.states.values()), 9))
    return outcomes, len(rows.deliveries)


async def _insert_events(conn: asyncpg.Connection, items: Sequence[NewEvent]) -> set[str]:
    """Insert new events; returns the ids stored now (an id stored before, by any instance, is left alone)."""
    if not items:
        return set()
    event_rows = [
        (
            ev.event_id,
            ev.channel,
            ev.source,
            ev.tenant_id,
            ev.entity_key,
            ev.version,
            ev.version_order,
            utc_text(ev.occurred_at),
            utc_text(ev.received_at),
            ev.payload,
            ev.original,
            ev.original_type,
        )
        for ev in (item.event for item in items)
    ]
    return {r[0] for r in await conn.fetch(Q["insert_events"], *_columns(event_rows, 12))}


async def _rule_states(conn: asyncpg.Connection, events: Sequence[Event]) -> dict[tuple[str, str], RuleState]:
    """Where every rule stands for the keys of `events` (one query per batch)."""
    keys = sorted({ev.entity_key for ev in events if ev.entity_key is not None})
    return {
        (r[0], r[1]): RuleState(r[0], r[1], bool(r[2]), r[3], r[4])
        for r in await conn.fetch(Q["rule_states_for"], keys)
    }


@dataclass(slots=True)
class _IngestRows:
    """The rows new events add to one transaction: deliveries, supersessions, and each key's newest state."""

    deliveries: list[tuple[Any, ...]] = field(default_factory=list)
    supersede: list[tuple[Any, ...]] = field(default_factory=list)
    states: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)

    def add(self, item: NewEvent) -> None:
        ev = item.event
        received = utc_text(ev.received_at)
        for plan in item.deliveries:
            self.deliveries.append(
                (ev.event_id, plan.subscriber, ev.entity_key, ev.version_order, plan.check_stale, received)
            )
            if plan.collapse and ev.entity_key is not None:
                self.supersede.append((ev.event_id, plan.subscriber, ev.entity_key, ev.version_order, received))
        if item.track_state and ev.entity_key is not None:
            noun, _, verb = ev.channel.partition("/")
            held = self.states.get((noun, ev.entity_key))
            # One row per key and statement: the newest version of the batch (ties keep the first, as the
            # upsert keeps what is stored on a tie).
            if held is None or ev.version_order > held[4]:
                self.states[(noun, ev.entity_key)] = (
                    noun,
                    ev.entity_key,
                    ev.channel,
                    ev.version,
                    ev.version_order,
                    ev.event_id,
                    received,
                    verb == "deleted",
                    ev.payload,
                )


async def _apply_completions(conn: asyncpg.Connection, completions: Sequence[Completion]) -> None:
    attempts: list[tuple[Any, ...]] = []
    finishes: list[tuple[Any, ...]] = []
    keys: list[tuple[Any, ...]] = []
    stale: list[tuple[Any, ...]] = []
    successes: dict[str, str] = {}
    for c in completions:
        finished = utc_text(c.started_at + timedelta(milliseconds=c.duration_ms))
        attempts.append(
            (c.delivery_id, c.attempt, utc_text(c.started_at), c.duration_ms, c.status, c.error, c.response_excerpt)
        )
        finishes.append(
            (
                c.delivery_id,
                c.owner,
                c.lease_token,
                c.state,
                c.attempt,
                _ts(c.next_attempt_at),
                c.status,
                c.error,
                finished if c.state != "pending" else None,
            )
        )
        if c.state == "delivered":
            successes[c.subscriber] = max(successes.get(c.subscriber, ""), finished)
            if c.track_key and c.entity_key is not None:
                keys.append((c.subscriber, c.entity_key, c.version_order))
                if c.mark_older_stale:
                    stale.append((c.subscriber, c.entity_key, c.version_order, finished))
    await conn.execute(Q["insert_attempts"], *_columns(attempts, 7))
    await conn.execute(Q["finish_deliveries"], *_columns(finishes, 9))
    if keys:
        await conn.execute(Q["record_keys_delivered"], *_columns(keys, 3))
    if stale:
        await conn.execute(Q["mark_older_stale"], *_columns(stale, 4))
    if successes:
        await conn.execute(Q["touch_subscriber_success"], list(successes), list(successes.values()))


async def _drop_over_budget(conn: asyncpg.Connection, max_bytes: int, *, keep_id: int) -> tuple[int, int]:
    """Delete the oldest quarantine entries (never `keep_id`) until the total is within `max_bytes`.

    Returns (entries deleted, bytes held afterwards).
    """
    usage = int(await conn.fetchval(Q["quarantine_bytes"]))
    excess = usage - max_bytes
    freed = 0
    last_id = 0
    while freed < excess:
        rows = await conn.fetch(Q["quarantine_oldest"], last_id, keep_id, 256)
        if not rows:
            break  # only the newest entry is left: it is kept even when it alone exceeds the budget
        for row_id, size in rows:
            freed += int(size)
            last_id = int(row_id)
            if freed >= excess:
                break
    if not last_id:
        return 0, usage
    deleted = _rowcount(await conn.execute(Q["drop_quarantine_through"], last_id))
    return deleted, usage - freed


def _rowcount(status: str) -> int:
    """The row count of a command tag ('UPDATE 3', 'INSERT 0 5', 'DELETE 1')."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _describe(exc: BaseException) -> str:
    """An error for people: the server's message or the socket's reason, never the connection URL."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # asyncio's strerror repeats the address: "Connect call failed (…)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, TimeoutError):
        return "no answer (timed out)"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]

"""Runs accepted commands against their ERP: per connection at most `max_in_flight` at once, calls spaced by
`rate_limit`, one command of a customer at a time, retries on the source's schedule, and — before repeating a
create whose last attempt may have been carried out — a lookup by the command's external reference.

No store transaction is held across an ERP call: a command is leased (a short write), the ERP is called, and
the outcome is written with its event (another short write). The lease is renewed while the call is in flight,
so a slow ERP never lets a second attempt start beside the first; a command whose executor died is taken over
once its lease runs out, and counts as an attempt whose outcome is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import structlog

from relay import metrics
from relay.commands.erp import Connector, build_connector
from relay.commands.policy import (
    Attempt,
    failed_event_payload,
    next_retry_at,
    next_start_at,
    succeeded_event_payload,
)
from relay.config import CommandsConfig, SxeSource, X3Source
from relay.ingest.pipeline import Candidate, build_event
from relay.leases import LeaseKeeper
from relay.runtime import Runtime
from relay.store import CommandRow, NewEvent, StoreUnavailable

log = structlog.get_logger(__name__)

__all__ = ["CommandExecutor", "commands_sources"]

_CREATES = ("order/create", "customer/create")
_IDLE_LEASE_S = 180.0  # no commands source: the renewal loop looks every third of this (a reload wakes it)


def commands_sources(runtime: Runtime) -> list[X3Source | SxeSource]:
    """The configured connections that accept commands."""
    return [s for s in runtime.config.sources if isinstance(s, X3Source | SxeSource) and s.commands is not None]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Worker:
    source: X3Source | SxeSource
    connector: Connector
    task: asyncio.Task[None] | None = None
    running: set[asyncio.Task[None]] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_start: datetime | None = None
    pace: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def commands(self) -> CommandsConfig:
        assert self.source.commands is not None
        return self.source.commands


class CommandExecutor:
    """The write-back worker of one relay process (a daemon service: start, stop, reconfigure)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        poll_interval_s: float = 0.5,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.runtime = runtime
        self.poll_interval_s = poll_interval_s
        self.clock = clock
        self.owner = f"commands-{os.getpid()}-{secrets.token_hex(4)}"
        self.session: aiohttp.ClientSession | None = None
        self.workers: dict[str, _Worker] = {}
        self._gauges_at = 0.0
        # Commands whose attempt runs in this process → their lease (s); renewed until the attempt ends. One whose
        # lease ran out and was taken over meanwhile (`lost`) sends nothing more to the ERP.
        self._leases: LeaseKeeper[str, float] = LeaseKeeper("command", self._renew_leases, self._shortest_lease_s)

    async def start(self) -> None:
        """Start one worker per connection with a `commands:` block."""
        self.session = aiohttp.ClientSession()
        self._sync_workers()
        self._leases.start()

    def _sync_workers(self) -> None:
        assert self.session is not None
        wanted = {s.name: s for s in commands_sources(self.runtime)}
        for name in [n for n in self.workers if n not in wanted]:
            worker = self.workers.pop(name)
            if worker.task is not None:
                worker.task.cancel()
        for name, source in wanted.items():
            current = self.workers.get(name)
            if current is not None and current.source == source:
                continue
            if current is not None and current.task is not None:
                current.task.cancel()
            try:
                connector = build_connector(source, self.session)
            except ValueError as exc:
                log.error("commands of this source cannot run", source=name, error=str(exc))
                continue
            worker = _Worker(source, connector)
            worker.task = asyncio.create_task(self._loop(worker), name=f"commands:{name}")
            self.workers[name] = worker

    def reconfigure(self, runtime: Runtime) -> None:
        """Take a reloaded configuration: workers of changed sources restart, removed ones stop."""
        self.runtime = runtime
        self._sync_workers()
        self._leases.reconfigured()

    def notify(self, source: str) -> None:
        """A command of `source` was accepted: look for work now rather than at the next poll."""
        worker = self.workers.get(source)
        if worker is not None:
            worker.wake.set()

    async def stop(self, grace_s: float) -> None:
        """Let attempts in flight finish within `grace_s`, then hand back what this process holds."""
        loops = [w.task for w in self.workers.values() if w.task is not None]
        for task in loops:
            task.cancel()
        running = [t for w in self.workers.values() for t in w.running]
        if running:
            _, pending = await asyncio.wait(running, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*loops, return_exceptions=True)
        await self._leases.stop()
        with contextlib.suppress(StoreUnavailable):
            await self.runtime.store.release_command_leases(self.owner)
        if self.session is not None:
            await self.session.close()

    # ------------------------------------------------------------------------------------ the loop

    async def _loop(self, worker: _Worker) -> None:
        store = self.runtime.store
        name = worker.source.name
        while True:
            try:
                free = worker.commands.max_in_flight - len(worker.running)
                if free > 0:
                    now = self.clock()
                    claimed = await store.claim_commands(
                        self.owner,
                        name,
                        now=now,
                        lease_until=now + timedelta(seconds=worker.commands.lease_s),
                        limit=free,
                    )
                    for row in claimed:
                        self._leases.hold(row.id, worker.commands.lease_s)
                        task = asyncio.create_task(self._run(worker, row), name=f"command:{row.id}")
                        worker.running.add(task)
                        task.add_done_callback(functools.partial(self._done, worker))
                await self._refresh_gauges()
            except StoreUnavailable as exc:
                log.warning("commands: store unavailable", source=name, error=str(exc))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("commands: claim failed", source=name)
            worker.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval_s):
                    await worker.wake.wait()

    def _done(self, worker: _Worker, task: asyncio.Task[None]) -> None:
        worker.running.discard(task)
        worker.wake.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("commands: attempt crashed", source=worker.source.name, error=f"{type(exc).__name__}: {exc}")

    async def _refresh_gauges(self) -> None:
        if time.monotonic() - self._gauges_at < 1.0:
            return
        self._gauges_at = time.monotonic()
        counts = await self.runtime.store.open_command_counts()
        for source in commands_sources(self.runtime):
            for command in source.commands.allow if source.commands else []:
                metrics.labelled(metrics.COMMANDS_PENDING, source.name, command).set(
                    counts.get((source.name, command), 0)
                )

    def _shortest_lease_s(self) -> float:
        leases_s = [w.commands.lease_s for w in self.workers.values()] + list(self._leases.held.values())
        return min(leases_s, default=_IDLE_LEASE_S)

    async def _renew_leases(self, held: dict[str, float]) -> set[str]:
        """Each command's lease extended by its own length (sources may differ): one statement per length."""
        by_lease: dict[float, list[str]] = {}
        for command_id, lease_s in held.items():
            by_lease.setdefault(lease_s, []).append(command_id)
        now = self.clock()
        renewed: set[str] = set()
        for lease_s, command_ids in by_lease.items():
            until = now + timedelta(seconds=lease_s)
            renewed |= await self.runtime.store.renew_command_leases(self.owner, command_ids, until)
        return renewed

    def _still_held(self, row: CommandRow) -> bool:
        if row.id not in self._leases.lost:
            return True
        log.warning("command lease lost before the ERP call; the executor that took it over carries on")
        return False

    async def _paced(self, worker: _Worker) -> None:
        """Wait for this connection's next slot under `rate_limit` (slots are handed out one at a time)."""
        async with worker.pace:
            at = next_start_at(worker.last_start, worker.commands.rate_limit, self.clock())
            wait_s = (at - self.clock()).total_seconds()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            worker.last_start = at

    # ------------------------------------------------------------------------------------ one attempt

    async def _attempt(self, worker: _Worker, row: CommandRow, payload: Mapping[str, Any]) -> Attempt:
        connector = worker.connector
        # attempts counts this one: more than one means an earlier attempt may have reached the ERP (it timed
        # out, or its executor died mid-call), so a create is looked up before it is sent again.
        if row.command in _CREATES and row.attempts > 1:
            previous_sent = row.error is None or row.error.get("kind") != "transient"
            if connector.can_find(row.command, payload):
                found = await connector.find(row.command, payload)
                if found is not None:
                    return found
                if not self._still_held(row):
                    return Attempt("unknown", "the command's lease was lost during its lookup")
            elif previous_sent:
                return Attempt(
                    "refused",
                    "an earlier attempt may have created the document and the ERP offers nothing to look it up by;"
                    " check the ERP, then `relay commands retry` if it is not there",
                    details={"code": "outcome_unknown"},
                )
        return await connector.execute(row.command, payload)

    async def _run(self, worker: _Worker, row: CommandRow) -> None:
        source = worker.source
        structlog.contextvars.bind_contextvars(command_id=row.id, source=source.name, attempt=row.attempts)
        try:
            payload = orjson.loads(row.body)
            await self._paced(worker)
            if not self._still_held(row):
                return
            started = time.perf_counter()
            try:
                attempt = await self._attempt(worker, row, payload)
            except Exception as exc:
                # A fault of ours (a mapping that does not fit the command, …): treated as an unknown outcome, so
                # the command is retried on its schedule, looked up first, and fails once the schedule is over.
                log.exception("commands: attempt failed inside the relay")
                attempt = Attempt("unknown", f"the relay could not run the attempt: {type(exc).__name__}: {exc}")
            finally:
                metrics.labelled(metrics.COMMAND_DURATION, source.name, row.command).observe(
                    time.perf_counter() - started
                )
            # Writing the outcome is short and the lease was renewed within a third of it: no renewal races the write.
            self._leases.release(row.id)
            await self._record(worker, row, payload, attempt)
        except StoreUnavailable as exc:
            # The outcome is not on disk: the lease runs out and the next attempt looks the document up.
            log.warning("commands: outcome not stored", error=str(exc))
        finally:
            self._leases.release(row.id)
            structlog.contextvars.unbind_contextvars("command_id", "source", "attempt")

    async def _record(self, worker: _Worker, row: CommandRow, payload: Mapping[str, Any], attempt: Attempt) -> None:
        store = self.runtime.store
        source = worker.source
        now = self.clock()
        tenant = source.folder if isinstance(source, X3Source) else None
        if attempt.kind == "done":
            result = {"documentNumber": attempt.document_number, **attempt.details}
            channel, event = succeeded_event_payload(row, payload, attempt, tenant_id=tenant, now=now)
            finished = await store.finish_command(
                row.id, self.owner, status="succeeded", result=result, error=None, now=now,
                event=self._event(source.name, channel, event, now),
            )  # fmt: skip
            outcome = "succeeded"
            log.info("command succeeded", document_number=attempt.document_number, adopted=result.get("adopted", False))
        elif attempt.kind == "refused":
            code = str(attempt.details.get("code", "erp_refused"))
            error = {"code": code, "message": attempt.message, "erpMessages": list(attempt.erp_messages)}
            finished = await self._fail(worker, row, payload, error, now, tenant)
            outcome = "failed"
            log.info("command refused", message=attempt.message[:300])
        else:
            commands = worker.commands
            retry_at = next_retry_at(
                row.attempts,
                schedule_s=commands.retry.schedule_s,
                window_start=row.window_start_at,
                max_age_s=commands.retry.max_age_s,
                now=now,
                retry_after_s=attempt.retry_after_s,
            )
            error = {"code": attempt.kind, "kind": attempt.kind, "message": attempt.message, "erpMessages": []}
            if retry_at is None:
                error = {**error, "code": "retries_exhausted"}
                finished = await self._fail(worker, row, payload, error, now, tenant)
                outcome = "failed"
                log.warning("command failed: retries exhausted", message=attempt.message[:300])
            else:
                finished = await store.reschedule_command(row.id, self.owner, next_attempt_at=retry_at, error=error)
                outcome = "retry"
                log.info(
                    "command will be retried",
                    kind=attempt.kind,
                    retry_at=retry_at.isoformat(),
                    message=attempt.message[:300],
                )
        if not finished:
            log.warning("command lease lost before its outcome was written; another executor took it over")
            return
        metrics.labelled(metrics.COMMANDS, source.name, row.command, outcome).inc()

    async def _fail(
        self,
        worker: _Worker,
        row: CommandRow,
        payload: Mapping[str, Any],
        error: dict[str, Any],
        now: datetime,
        tenant: str | None,
    ) -> bool:
        channel, event = failed_event_payload(row, payload, error, attempts=row.attempts, tenant_id=tenant, now=now)
        return await self.runtime.store.finish_command(
            row.id, self.owner, status="failed", result=None, error=error, now=now,
            event=self._event(worker.source.name, channel, event, now),
        )  # fmt: skip

    def _event(self, source: str, channel: str, payload: dict[str, Any], now: datetime) -> NewEvent | None:
        specs = self.runtime.specs
        if not specs.has_channel(channel):
            log.error("outcome channel missing from the loaded specs; no event", channel=channel)
            return None
        if issues := specs.validate(channel, payload):
            log.error("outcome event does not match its spec; no event", channel=channel, issues=str(issues[:3]))
            return None
        event = build_event(Candidate(channel, payload), source=source, received_at=now)
        return NewEvent(event, self.runtime.ingestor.router.plan(channel, payload))

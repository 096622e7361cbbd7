"""Runs every polled resource on its own schedule: one poll at a time per resource, backoff on errors.

Several instances on one PostgreSQL store poll each resource on one instance at a time: a resource is polled
only under its lease, which the holder renews every third of `store.poll_lease` while it lives; the others ask
as often and take it over once it has lapsed.

Timing is pure (`next_delay_s`, `backoff_s`, `cron_next`); the service only sleeps and calls the Poller.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import structlog

from relay import metrics
from relay.config import HttpJsonSource, SourceConfig
from relay.leases import renewal_period_s
from relay.onboarding.health import Failure, HealthState, error_class
from relay.onboarding.watch import record_health
from relay.poll.base import Fetcher, PollError, ResourceSpec
from relay.poll.changes import RecordMapping
from relay.poll.engine import Poller
from relay.runtime import Runtime
from relay.spec import SpecRegistry
from relay.store import StoreUnavailable

log = structlog.get_logger(__name__)

__all__ = [
    "BUILDERS",
    "PollScheduler",
    "ResourceStatus",
    "backoff_s",
    "build_source",
    "cron_delay_s",
    "cron_next",
    "next_delay_s",
    "source_up",
]

Builder = Callable[[SourceConfig, aiohttp.ClientSession, SpecRegistry], tuple[Fetcher, list[ResourceSpec]]]
BUILDERS: dict[str, Builder] = {}


def next_delay_s(every_s: float, jitter: float, rng: random.Random) -> float:
    """The interval ± `jitter` (a fraction), so many resources do not poll in lockstep."""
    return max(0.05, every_s * (1 + rng.uniform(-jitter, jitter)))


def backoff_s(failures: int, *, retry_after_s: float | None, every_s: float, cap_s: float = 300.0) -> float:
    """After `failures` consecutive errors: the server's Retry-After, else doubling from the interval."""
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), 3600.0)
    return float(min(cap_s, max(every_s, 1.0) * 2.0 ** min(failures - 1, 10)))


def _cron_field(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
        if part in ("*", ""):
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = int(a), int(b)
        else:
            start = end = int(part)
        if start < low or end > high or step < 1:
            raise ValueError(f"cron field {text!r} out of range {low}-{high}")
        values.update(range(start, end + 1, step))
    return values


def cron_next(expression: str, after: datetime) -> datetime:
    """The next minute after `after` matching a 5-field cron expression (minute hour day month weekday).

    Raises:
        ValueError: a malformed expression.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError("a cron expression has 5 fields: minute hour day-of-month month day-of-week")
    minutes, hours, days, months = (
        _cron_field(fields[0], 0, 59),
        _cron_field(fields[1], 0, 23),
        _cron_field(fields[2], 1, 31),
        _cron_field(fields[3], 1, 12),
    )
    weekdays = {d % 7 for d in _cron_field(fields[4], 0, 7)}
    t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(366 * 24 * 60):
        if (
            t.minute in minutes
            and t.hour in hours
            and t.day in days
            and t.month in months
            and (t.isoweekday() % 7) in weekdays
        ):
            return t
        t += timedelta(minutes=1)
    raise ValueError(f"cron expression {expression!r} never matches")


def cron_delay_s(expression: str, after: datetime) -> float:
    """Seconds from `after` until the next run of a cron expression: the wait after a run, and its interval.

    Raises:
        ValueError: a malformed expression.
    """
    return (cron_next(expression, after) - after).total_seconds()


def source_up(failures_per_resource: Sequence[int]) -> bool:
    """A polled source is up when the last run of each of its resources succeeded (no failure streak)."""
    return all(failures == 0 for failures in failures_per_resource)


def _http_json_builder(
    source: SourceConfig, session: aiohttp.ClientSession, specs: SpecRegistry
) -> tuple[Fetcher, list[ResourceSpec]]:
    from relay.poll.http_json import HttpJsonFetcher

    assert isinstance(source, HttpJsonSource)
    resources = []
    for i, r in enumerate(source.resources):
        resources.append(
            resource_spec(
                f"{i}:{r.url}",
                r.channel,
                RecordMapping.parse(r.mapping),
                specs,
                every_s=r.every_s,
                jitter=r.jitter,
                reconcile_every_s=r.reconcile_every_s,
                cron=r.cron,
                options={"url": r.url},
                tenant_id=source.tenant_id,
            )
        )
    return HttpJsonFetcher(source, session), resources


BUILDERS["http-json"] = _http_json_builder


def resource_spec(
    name: str,
    channel: str,
    mapping: RecordMapping,
    specs: SpecRegistry,
    **kwargs: object,
) -> ResourceSpec:
    """A ResourceSpec with document types and the deletion channel taken from the loaded specs.

    Raises:
        ValueError: the channel is not in the loaded AsyncAPI documents.
    """
    spec = specs.channels.get(channel)
    if spec is None or spec.document_type is None:
        raise ValueError(f"channel {channel!r} is not in the loaded AsyncAPI documents")
    deleted = channel.rsplit("/", 1)[0] + "/deleted"
    deleted_spec = specs.channels.get(deleted)
    if kwargs.get("reconcile_every_s") and (deleted_spec is None or deleted_spec.document_type is None):
        raise ValueError(
            f"reconcile_every is set for {name!r} but channel {deleted!r} is not in the loaded AsyncAPI documents"
        )
    return ResourceSpec(
        name=name,
        channel=channel,
        mapping=mapping,
        document_type=spec.document_type,
        deleted_channel=deleted if deleted_spec else None,
        deleted_document_type=deleted_spec.document_type if deleted_spec else None,
        **kwargs,  # type: ignore[arg-type]
    )


def build_source(
    source: SourceConfig, session: aiohttp.ClientSession, specs: SpecRegistry
) -> tuple[Fetcher, list[ResourceSpec]] | None:
    """The fetcher and resources of a polled source; None for push sources."""
    builder = BUILDERS.get(source.kind)
    if builder is None:
        return None
    return builder(source, session, specs)


def _interval_s(resource: ResourceSpec) -> float:
    if resource.cron:
        # A malformed expression is reported where the job first schedules by it, not while starting others.
        with contextlib.suppress(ValueError):
            return cron_delay_s(resource.cron, datetime.now(UTC))
    return resource.every_s


@dataclass(frozen=True, slots=True)
class ResourceStatus:
    """How one polled resource is doing in this process (operators' view; kept in memory only)."""

    source: str
    resource: str
    channel: str
    last_poll_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    failures: int


@dataclass(eq=False)
class _Job:
    source: str
    fetcher: Fetcher
    resource: ResourceSpec
    task: asyncio.Task[None] | None = None
    failures: int = 0
    last_error: str | None = None
    last_success: datetime | None = None
    last_poll: datetime | None = None
    rng: random.Random = field(default_factory=random.Random)
    health: HealthState | None = None  # None: not read from the store yet
    holding: bool | None = None  # this instance holds the poll lease (None: not asked yet)

    @property
    def label(self) -> str:
        return metrics.resource_label(self.resource.name)


class PollScheduler:
    """The polling service of `relay serve`."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._session: aiohttp.ClientSession | None = None
        self._jobs: list[_Job] = []
        self._fetchers: list[Fetcher] = []
        self.owner = f"{socket.gethostname()}/{os.getpid()}/poll-{uuid.uuid4().hex[:8]}"
        self._renew_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(headers={"User-Agent": "erp-relay"})
        self._start_jobs()
        self._renew_task = asyncio.create_task(self._renew_forever(), name="poll-leases")

    @property
    def leases_held(self) -> int:
        """(source, resource) poll leases this process holds, as of each resource's last check."""
        return sum(1 for job in self._jobs if job.holding)

    @property
    def _lease_s(self) -> float:
        return self.runtime.config.store.poll_lease_s

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(renewal_period_s(self._lease_s))  # the renewal period, not a synchronisation
            try:
                await self.runtime.store.renew_poll_leases(self.owner, self._lease_s)
            except StoreUnavailable as exc:
                log.warning("poll leases not renewed", error=str(exc))

    async def _hold(self, job: _Job) -> bool:
        """Take or renew this resource's poll lease; False while another instance polls it."""
        try:
            held = await self.runtime.store.hold_poll_lease(job.source, job.resource.name, self.owner, self._lease_s)
        except StoreUnavailable as exc:
            log.warning(
                "poll lease unknown: not polling", source=job.source, resource=job.resource.name, error=str(exc)
            )
            held = False
        if held != job.holding and (held or job.holding is not None):
            if held:
                log.info("poll lease taken: polling here", source=job.source, resource=job.resource.name)
            else:
                log.info("polled by another instance", source=job.source, resource=job.resource.name)
        job.holding = held
        return held

    def _start_jobs(self) -> None:
        assert self._session is not None
        for source in self.runtime.config.sources:
            try:
                built = build_source(source, self._session, self.runtime.specs)
            except (ValueError, OSError) as exc:
                log.error("source not started", source=source.name, error=str(exc))
                continue
            if built is None:
                continue
            fetcher, resources = built
            self._fetchers.append(fetcher)
            metrics.register_known(resources=[metrics.resource_label(r.name) for r in resources])
            for resource in resources:
                job = _Job(source.name, fetcher, resource)
                metrics.labelled(metrics.POLL_INTERVAL, job.source, job.label).set(_interval_s(resource))
                job.task = asyncio.create_task(self._run(job), name=f"poll {source.name} {resource.name}")
                self._jobs.append(job)
        if self._jobs:
            log.info("polling started", resources=len(self._jobs))

    async def _stop_jobs(self) -> None:
        for job in self._jobs:
            if job.task is not None:
                job.task.cancel()
        for job in self._jobs:
            if job.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await job.task
        for fetcher in self._fetchers:
            with contextlib.suppress(Exception):
                await fetcher.close()
        self._jobs, self._fetchers = [], []

    def reconfigure(self, runtime: Runtime) -> None:
        self.runtime = runtime

        async def restart() -> None:
            before = {(job.source, job.label) for job in self._jobs}
            await self._stop_jobs()
            # Resources this instance no longer polls must not stay leased to it.
            with contextlib.suppress(StoreUnavailable):
                await self.runtime.store.release_poll_leases(self.owner)
            self._start_jobs()
            self._forget_removed(before)

        task = asyncio.get_running_loop().create_task(restart())
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        self._restart = task

    def _forget_removed(self, before: set[tuple[str, str]]) -> None:
        # A source or resource gone from the configuration stops exporting series (and firing alerts).
        now = {(job.source, job.label) for job in self._jobs}
        for source, label in before - now:
            for metric in (metrics.POLL_INTERVAL, metrics.POLL_LAST_SUCCESS):
                metrics.forget(metric, source, label)
            for outcome in ("success", "error", "crash"):
                metrics.forget(metrics.POLL_RUNS, source, label, outcome)
            metrics.forget(metrics.POLL_DURATION, source, label)
        for source in {s for s, _ in before} - {s for s, _ in now}:
            metrics.forget(metrics.SOURCE_UP, source)
            metrics.forget(metrics.SOURCE_TOKEN_EXPIRY, source)

    def _record_run(self, job: _Job, outcome: str, duration_s: float) -> None:
        metrics.labelled(metrics.POLL_RUNS, job.source, job.label, outcome).inc()
        metrics.labelled(metrics.POLL_DURATION, job.source, job.label).observe(duration_s)
        if outcome == "success":
            metrics.labelled(metrics.POLL_LAST_SUCCESS, job.source, job.label).set(time.time())
        up = source_up([j.failures for j in self._jobs if j.source == job.source])
        metrics.labelled(metrics.SOURCE_UP, job.source).set(1 if up else 0)
        expires_at = job.fetcher.token_expires_at
        if expires_at is not None:  # a token renewed (or not) in this run; kept when a 401 dropped it
            metrics.labelled(metrics.SOURCE_TOKEN_EXPIRY, job.source).set(expires_at.timestamp())

    async def stop(self, grace_s: float) -> None:
        if self._renew_task is not None:
            self._renew_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renew_task
        await self._stop_jobs()
        with contextlib.suppress(StoreUnavailable):  # a clean stop hands the resources over at once
            await self.runtime.store.release_poll_leases(self.owner)
        if self._session is not None:
            await self._session.close()

    def status(self) -> list[ResourceStatus]:
        """Every polled resource's last poll, last success, last error and failure streak."""
        return [
            ResourceStatus(
                job.source,
                job.resource.name,
                job.resource.channel,
                job.last_poll,
                job.last_success,
                job.last_error,
                job.failures,
            )
            for job in self._jobs
        ]

    def token_expiries(self) -> dict[str, datetime | None]:
        """When the access token of each polled source expires (None: no token yet, or none needed)."""
        return {job.source: job.fetcher.token_expires_at for job in self._jobs}

    def _poller(self, job: _Job) -> Poller:
        return Poller(
            store=self.runtime.store,
            specs=self.runtime.specs,
            router=self.runtime.ingestor.router,
            source=job.source,
            fetcher=job.fetcher,
            resource=job.resource,
        )

    async def _health(self, job: _Job, failure: Failure | None) -> None:
        # Source health follows the source's answers only: a crash (say the store refused a commit) is ours.
        try:
            job.health, _ = await record_health(
                self.runtime.store,
                self.runtime.specs,
                self.runtime.ingestor.router,
                source=job.source,
                resource=job.resource.name,
                label=job.label,
                state=job.health,
                failure=failure,
                now=datetime.now(UTC),
                failures_before_failing=self.runtime.config.health.failures_before_failing,
                tenant_id=job.resource.tenant_id,
            )
        except StoreUnavailable as exc:
            log.warning("source health not recorded", source=job.source, resource=job.label, error=str(exc))

    async def _run(self, job: _Job) -> None:
        r = job.resource
        next_reconcile = datetime.now(UTC) + timedelta(seconds=r.reconcile_every_s) if r.reconcile_every_s else None
        while True:
            if not await self._hold(job):
                await asyncio.sleep(renewal_period_s(self._lease_s))  # standby: ask again at the renewal period
                continue
            started = time.perf_counter()
            job.last_poll = datetime.now(UTC)
            try:
                report = await self._poller(job).poll_once()
                if next_reconcile is not None and datetime.now(UTC) >= next_reconcile:
                    deleted = await self._poller(job).reconcile()
                    next_reconcile = datetime.now(UTC) + timedelta(seconds=r.reconcile_every_s or 0)
                    if deleted.deleted:
                        log.info("deletions found", source=job.source, resource=r.name, count=len(deleted.deleted))
            except PollError as exc:
                job.failures += 1
                job.last_error = str(exc)
                self._record_run(job, "error", time.perf_counter() - started)
                await self._health(job, Failure(error_class(exc.status), str(exc)))
                wait = backoff_s(job.failures, retry_after_s=exc.retry_after_s, every_s=r.every_s)
                log.warning("poll failed", source=job.source, resource=r.name, error=str(exc), retry_in_s=wait)
                await asyncio.sleep(wait)
                continue
            except Exception:
                job.failures += 1
                self._record_run(job, "crash", time.perf_counter() - started)
                log.exception("poll crashed", source=job.source, resource=r.name)
                await asyncio.sleep(backoff_s(job.failures, retry_after_s=None, every_s=r.every_s))
                continue
            job.failures = 0
            job.last_error = None
            job.last_success = datetime.now(UTC)
            self._record_run(job, "success", time.perf_counter() - started)
            await self._health(job, None)
            if report.accepted:
                log.info("poll emitted", source=job.source, resource=r.name, events=report.accepted)
            if r.cron:
                wait_s = cron_delay_s(r.cron, datetime.now(UTC))
                metrics.labelled(metrics.POLL_INTERVAL, job.source, job.label).set(wait_s)
                await asyncio.sleep(wait_s)
            else:
                await asyncio.sleep(next_delay_s(r.every_s, r.jitter, job.rng))

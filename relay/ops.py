"""Every operator action and query, in one place: the CLI and the admin API parse, call this, and render.

Results are typed records with aware UTC datetimes; `relay.views` turns them into the one JSON shape each
record type has on the wire. Nothing here formats text for a person or knows about HTTP.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from relay.config import Config
from relay.events import Event, parse_ts
from relay.routing import Router
from relay.runtime import Runtime, open_configured_store
from relay.spec import SpecRegistry
from relay.store.base import (
    CommandFilter,
    CommandRow,
    DeliveryFilter,
    DeliveryRow,
    EventFilter,
    QuarantineRow,
    Store,
    SubscriberState,
)

if TYPE_CHECKING:
    from relay.deliver.dispatcher import Dispatcher

__all__ = [
    "Attempt",
    "DeliveryDetail",
    "DeliveryFilter",
    "DeliveryRecord",
    "EventDetail",
    "EventFilter",
    "NotFoundError",
    "Operations",
    "OpsError",
    "QuarantineRecord",
    "QuarantineRetry",
    "ReplayCount",
    "SubscriberHealth",
    "UnknownSubscriberError",
    "operations",
    "parse_when",
]


class OpsError(Exception):
    """An operator request that cannot be carried out; the message says why in the operator's words."""


class NotFoundError(OpsError):
    """No record with that id."""


class UnknownSubscriberError(OpsError):
    """The name is not a subscriber of the loaded configuration."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no subscriber named {name!r}")
        self.name = name


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One delivery of one event to one subscriber."""

    id: int
    event_id: str
    subscriber: str
    channel: str
    entity_key: str | None
    state: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None  # only while pending
    replay: bool
    last_status: int | None
    last_error: str | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP attempt of a delivery and what the subscriber answered."""

    attempt: int
    started_at: datetime
    duration_ms: float
    status: int | None
    error: str | None
    response_excerpt: str | None


@dataclass(frozen=True, slots=True)
class DeliveryDetail:
    delivery: DeliveryRecord
    attempts: list[Attempt]


@dataclass(frozen=True, slots=True)
class EventDetail:
    event: Event
    deliveries: list[DeliveryRecord]


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    """Refused input kept for inspection; `body` is None in lists."""

    id: int
    received_at: datetime
    source: str
    channel: str | None
    reason: str
    details: list[dict[str, Any]]
    content_type: str | None
    size: int
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class QuarantineRetry:
    """The outcome of checking a quarantined input again: stored (with event outcomes) or still refused."""

    quarantine_id: int
    stored: bool
    problems: list[str] = field(default_factory=list)
    events: list[tuple[str, str, int]] = field(default_factory=list)  # (event id, accepted|duplicate, deliveries)


@dataclass(frozen=True, slots=True)
class SubscriberHealth:
    name: str
    url: str
    disabled: bool
    disabled_reason: str | None
    pending: int
    dead: int
    circuit: str
    last_success_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReplayCount:
    """What a replay matched and created (or, in a dry run, would create)."""

    events: int
    deliveries: int
    dry_run: bool


_AGO = re.compile(r"([0-9]{1,9})([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, now: datetime) -> datetime:
    """An instant an operator typed: ISO 8601 (`Z`, an offset, or naive as UTC), or a time before `now`
    written as a number and a unit (`90s`, `30m`, `2h`, `7d`, `1w`).

    Raises:
        ValueError: neither form, or outside the years 1-9999; the message shows both forms.
    """
    value = text.strip()
    if match := _AGO.fullmatch(value):
        try:
            return now - timedelta(seconds=int(match[1]) * _UNIT_S[match[2]])
        except OverflowError:
            pass
    else:
        try:
            return parse_ts(value)
        except (ValueError, OverflowError):
            pass
    raise ValueError(f"expected an ISO 8601 time like 2026-11-20T09:00:00Z or a time ago like 2h, got {text!r}")


def _instant(text: str | None) -> datetime | None:
    return parse_ts(text) if text else None


def delivery_record(row: DeliveryRow) -> DeliveryRecord:
    """The typed record of a store row; the next attempt time only means something while pending."""
    return DeliveryRecord(
        id=row.id,
        event_id=row.event_id,
        subscriber=row.subscriber,
        channel=row.channel,
        entity_key=row.entity_key,
        state=row.state,
        attempts=row.attempts,
        created_at=parse_ts(row.created_at),
        next_attempt_at=_instant(row.next_attempt_at) if row.state == "pending" else None,
        replay=row.replay,
        last_status=row.last_status,
        last_error=row.last_error,
        finished_at=_instant(row.finished_at),
    )


def quarantine_record(row: QuarantineRow) -> QuarantineRecord:
    return QuarantineRecord(
        id=row.id,
        received_at=parse_ts(row.received_at),
        source=row.source,
        channel=row.channel,
        reason=row.reason,
        details=row.details,
        content_type=row.content_type,
        size=row.size,
        body=row.body,
    )


def subscriber_health(name: str, url: str, state: SubscriberState | None) -> SubscriberHealth:
    st = state or SubscriberState(name)
    return SubscriberHealth(
        name=name,
        url=url,
        disabled=st.disabled,
        disabled_reason=st.disabled_reason,
        pending=st.pending,
        dead=st.dead,
        circuit=st.circuit_state,
        last_success_at=_instant(st.last_success_at),
    )


class Operations:
    """Operator queries and actions over one store and the configuration it serves.

    Args:
        store: an opened store.
        config: the loaded configuration (subscriber names and URLs, sources).
        specs: the channel schemas; needed only by `retry_quarantine`.
        router: routes events to subscribers; built from `config` when not given.
        dispatcher: the running delivery engine, told about re-enabled subscribers; None outside `serve`.
    """

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        specs: SpecRegistry | None = None,
        router: Router | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.specs = specs
        self.router = router or Router(config.subscribers)
        self.dispatcher = dispatcher

    @classmethod
    def of(cls, runtime: Runtime) -> Operations:
        """The operations of a running relay (the admin API's view)."""
        return cls(
            runtime.store,
            runtime.config,
            specs=runtime.specs,
            router=runtime.ingestor.router,
            dispatcher=runtime.dispatcher,
        )

    def _known_subscriber(self, name: str | None) -> None:
        if name is not None and self.config.subscriber(name) is None:
            raise UnknownSubscriberError(name)

    # ------------------------------------------------------------------------------------ events

    async def list_events(self, flt: EventFilter) -> list[Event]:
        """Events matching the filter, without their deliveries."""
        return await self.store.list_events(flt)

    async def show_event(self, event_id: str) -> EventDetail:
        """One event with every delivery of it, newest first.

        Raises:
            NotFoundError: no such event.
        """
        found = await self.store.get_event(event_id)
        if found is None:
            raise NotFoundError(f"no event {event_id!r}")
        rows = await self.store.list_deliveries(DeliveryFilter(event_id=event_id, limit=1000))
        return EventDetail(found, [delivery_record(r) for r in rows])

    # ------------------------------------------------------------------------------------ deliveries

    async def list_deliveries(self, flt: DeliveryFilter) -> list[DeliveryRecord]:
        """Deliveries matching the filter, newest first."""
        return [delivery_record(r) for r in await self.store.list_deliveries(flt)]

    async def show_delivery(self, delivery_id: int) -> DeliveryDetail:
        """One delivery with every attempt in order: status, duration, the subscriber's answer.

        Raises:
            NotFoundError: no such delivery.
        """
        row = await self.store.get_delivery(delivery_id)
        if row is None:
            raise NotFoundError(f"no delivery {delivery_id}")
        return DeliveryDetail(delivery_record(row), await self._attempts(delivery_id))

    async def _attempts(self, delivery_id: int) -> list[Attempt]:
        return [
            Attempt(
                attempt=int(a["attempt"]),
                started_at=parse_ts(a["startedAt"]),
                duration_ms=float(a["durationMs"]),
                status=a["status"],
                error=a["error"],
                response_excerpt=a["response"],
            )
            for a in await self.store.list_attempts(delivery_id)
        ]

    async def list_dead(self, flt: DeliveryFilter) -> list[DeliveryRecord]:
        """Dead letters matching the filter, newest first.

        Raises:
            UnknownSubscriberError: the filter names a subscriber the configuration does not have.
        """
        self._known_subscriber(flt.subscriber)
        return await self.list_deliveries(_with_state(flt, "dead"))

    async def redrive(self, flt: DeliveryFilter, *, dry_run: bool = False) -> int:
        """Make matching dead deliveries pending and due now; returns how many (would be) redriven.

        Raises:
            UnknownSubscriberError: the filter names a subscriber the configuration does not have (a typo
                would otherwise redrive nothing and look like success).
        """
        self._known_subscriber(flt.subscriber)
        if dry_run:
            return len(await self.store.list_deliveries(_with_state(flt, "dead", limit=2**62)))
        return await self.store.redrive(flt)

    async def replay(
        self,
        flt: EventFilter,
        *,
        event_id: str | None = None,
        subscriber: str | None = None,
        dry_run: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> ReplayCount:
        """Deliver stored events again as new deliveries flagged replay; `dry_run` only counts.

        Raises:
            UnknownSubscriberError: `subscriber` is not configured.
        """
        from relay.deliver.replay import replay

        self._known_subscriber(subscriber)
        result = await replay(
            self.store,
            self.router,
            flt,
            event_id=event_id,
            subscriber=subscriber,
            dry_run=dry_run,
            on_progress=on_progress,
        )
        return ReplayCount(result.events_matched, result.deliveries, result.dry_run)

    # ------------------------------------------------------------------------------------ quarantine

    async def list_quarantine(self, *, source: str | None = None, limit: int = 100) -> list[QuarantineRecord]:
        """Quarantined inputs, newest first, without bodies."""
        return [quarantine_record(r) for r in await self.store.list_quarantine(source=source, limit=limit)]

    async def show_quarantine(self, quarantine_id: int) -> QuarantineRecord:
        """One quarantined input with its body.

        Raises:
            NotFoundError: no such entry.
        """
        row = await self.store.get_quarantine(quarantine_id)
        if row is None:
            raise NotFoundError(f"no quarantine entry {quarantine_id}")
        return quarantine_record(row)

    async def retry_quarantine(self, quarantine_id: int) -> QuarantineRetry:
        """Check a quarantined input again; when it passes now, store it and forget the entry.

        Raises:
            NotFoundError: no such entry.
        """
        from relay.ingest.requeue import requeue

        if self.specs is None:
            raise OpsError("retrying quarantined input needs the channel schemas")
        try:
            result = await requeue(self.store, self.specs, self.config, quarantine_id)
        except KeyError:
            raise NotFoundError(f"no quarantine entry {quarantine_id}") from None
        return QuarantineRetry(
            quarantine_id,
            stored=result.ok,
            problems=list(result.problems),
            events=[(o.event_id, o.status, o.deliveries) for o in result.outcomes],
        )

    # ------------------------------------------------------------------------------------ sources

    async def poll_preview(self, source_name: str, *, limit: int | None = None) -> list[dict[str, Any]]:
        """What one poll of a source would emit now (each resource from its checkpoint); stores nothing.

        Returns one payload per event, with `resource` and `channel` added.

        Raises:
            OpsError: no such source, a push source, or the poll failed (the message says why).
        """
        import aiohttp

        from relay.poll import load_builders
        from relay.poll.base import PollError
        from relay.poll.engine import Poller
        from relay.poll.scheduler import build_source

        source = self.config.source(source_name)
        if source is None:
            raise NotFoundError(f"no source named {source_name!r}")
        if self.specs is None:
            raise OpsError("a poll preview needs the channel schemas")
        load_builders()
        emitted: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as session:
            built = build_source(source, session, self.specs)
            if built is None:
                raise OpsError(f"{source_name} is a push source ({source.kind}): nothing to poll")
            fetcher, resources = built
            try:
                for resource in resources:
                    poller = Poller(
                        store=self.store,
                        specs=self.specs,
                        router=self.router,
                        source=source.name,
                        fetcher=fetcher,
                        resource=resource,
                    )
                    report = await poller.poll_once(dry_run=True, limit=limit)
                    emitted.extend(
                        {"resource": resource.name, "channel": resource.channel, **p} for p in report.emitted
                    )
            except PollError as exc:
                raise OpsError(f"poll failed: {exc}") from None
            finally:
                await fetcher.close()
        return emitted

    # ------------------------------------------------------------------------------------ subscribers

    async def subscribers(self) -> list[SubscriberHealth]:
        """Every configured subscriber with its pending and dead counts, circuit and last success."""
        states = await self.store.subscriber_states()
        return [subscriber_health(s.name, s.url, states.get(s.name)) for s in self.config.subscribers]

    async def enable_subscriber(self, name: str) -> datetime:
        """Re-enable a subscriber a 410 disabled; returns when.

        Raises:
            UnknownSubscriberError: `name` is not configured.
        """
        if name not in {s.name for s in self.config.subscribers}:
            raise UnknownSubscriberError(name)
        await self.store.set_subscriber_disabled(name, False, None)
        if self.dispatcher is not None:
            self.dispatcher.enable(name)
        return datetime.now(UTC)

    # ------------------------------------------------------------------------------------ commands

    async def list_commands(
        self, *, source: str | None = None, status: str | None = None, command: str | None = None, limit: int = 100
    ) -> list[CommandRow]:
        """Write-back commands, newest first."""
        return await self.store.list_commands(CommandFilter(source=source, status=status, command=command, limit=limit))

    async def show_command(self, command_id: str) -> CommandRow:
        """One command with its body, result and error.

        Raises:
            NotFoundError: no such command.
        """
        row = await self.store.get_command(command_id)
        if row is None:
            raise NotFoundError(f"no command {command_id}")
        return row

    async def retry_command(self, command_id: str) -> CommandRow:
        """Restart a failed command (a fresh retry window; a create is looked up before it is sent again).

        Raises:
            NotFoundError: no such command.
            OpsError: the command has not failed.
        """
        row = await self.show_command(command_id)
        if not await self.store.retry_command(command_id, datetime.now(UTC)):
            raise OpsError(f"command {command_id} is {row.status}; only a failed command can be retried")
        return await self.show_command(command_id)


def _with_state(flt: DeliveryFilter, state: str, *, limit: int | None = None) -> DeliveryFilter:
    return DeliveryFilter(
        event_id=flt.event_id,
        subscriber=flt.subscriber,
        state=state,
        channel=flt.channel,
        entity_key=flt.entity_key,
        since=flt.since,
        until=flt.until,
        limit=flt.limit if limit is None else limit,
    )


@contextlib.asynccontextmanager
async def operations(config: Config, specs: SpecRegistry | None = None) -> AsyncIterator[Operations]:
    """Open the configured store for the length of one operator command (the CLI's way in)."""
    store = open_configured_store(config)
    await store.open()
    try:
        yield Operations(store, config, specs=specs)
    finally:
        await store.close()

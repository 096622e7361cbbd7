"""Every operator action and query, in one place: the CLI and the admin API parse, call this, and render.

Results are typed records with aware UTC datetimes; `relay.views` turns them into the one JSON shape each
record type has on the wire. Nothing here formats text for a person or knows about HTTP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from relay.config import Config
from relay.events import Event, parse_ts
from relay.instances import LIVE_WITHIN_S
from relay.onboarding.discover import ResourceDraft
from relay.onboarding.preview import PreviewRow
from relay.routing import ChannelMatcher, Router, is_channel_glob
from relay.runtime import Runtime, apply_rules, open_configured_store
from relay.spec import SpecRegistry
from relay.store.base import (
    CommandFilter,
    CommandRow,
    DeliveryFilter,
    DeliveryRow,
    EventFilter,
    InstanceRecord,
    QuarantineRow,
    StateRecord,
    Store,
    StoreUnavailable,
    SubscriberState,
)

if TYPE_CHECKING:
    from relay.deliver.dispatcher import Dispatcher
    from relay.poll.scheduler import PollScheduler
    from relay.store.copy import TableCount

log = structlog.get_logger(__name__)

__all__ = [
    "Attempt",
    "CircuitProbe",
    "DeliveryDetail",
    "DeliveryFilter",
    "DeliveryRecord",
    "EventDetail",
    "EventFeed",
    "EventFilter",
    "NotFoundError",
    "Operations",
    "OpsError",
    "Overview",
    "QuarantineRecord",
    "QuarantineRetry",
    "RateWindow",
    "ReplayCount",
    "ResourceHealth",
    "SourceStatus",
    "StateRecord",
    "SubscriberHealth",
    "SubscriberStatus",
    "TestDelivery",
    "UnknownSubscriberError",
    "copy_store",
    "discover_ion",
    "discover_source",
    "operations",
    "operator_action",
    "parse_when",
    "preview_source",
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


@dataclass(frozen=True, slots=True)
class EventFeed:
    """Events oldest first, and the cursor to ask for the ones stored after them (`events tail`)."""

    events: list[Event]
    cursor: int


# ---------------------------------------------------------------------------------------- the console's records


@dataclass(frozen=True, slots=True)
class SubscriberStatus:
    """A subscriber's health as the overview shows it; `failure_streak` only where the delivery engine runs."""

    health: SubscriberHealth
    failure_streak: int | None


@dataclass(frozen=True, slots=True)
class ResourceHealth:
    """One polled resource of a source: its last poll, last success, last error and saved checkpoint."""

    resource: str
    channel: str
    last_poll_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    failures: int
    checkpoint: str | None


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """A configured source; `resources` are empty, and `token_expires_at` None, for push sources and outside
    `relay serve`."""

    name: str
    kind: str
    polled: bool
    resources: list[ResourceHealth]
    token_expires_at: datetime | None = None  # the current access token's, for sources that have one

    @property
    def failing(self) -> bool:
        return any(r.last_error is not None for r in self.resources)


@dataclass(frozen=True, slots=True)
class Overview:
    """The relay at a glance. Rates are per minute over up to the last five minutes of this process, None
    until two samples exist; counts come from the store."""

    at: datetime
    ingest_per_min: float | None
    delivered_per_min: float | None
    pending: int
    dead: int
    oldest_pending_at: datetime | None
    subscribers: list[SubscriberStatus]
    sources: list[SourceStatus]

    @property
    def oldest_pending_age_s(self) -> float | None:
        return (self.at - self.oldest_pending_at).total_seconds() if self.oldest_pending_at else None


@dataclass(frozen=True, slots=True)
class TestDelivery:
    """What one signed test event to a subscriber got: the answer, or why there was none."""

    subscriber: str
    message_id: str
    status: int | None
    duration_ms: float
    error: str | None
    response_excerpt: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class CircuitProbe:
    """A probe sent now: its delivery, and the circuit before and after (None outside `relay serve`)."""

    delivery: TestDelivery
    circuit_before: str | None
    circuit_after: str | None


class RateWindow:
    """Per-minute rates of two ever-growing counters over a sliding window of samples (pure: time passed in).

    Args:
        window_s: the longest span the rates are averaged over.
    """

    def __init__(self, window_s: float = 300.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float, float]] = deque()

    def observe(self, now_s: float, first: float, second: float) -> tuple[float | None, float | None]:
        """Add a sample (a monotonic time in seconds and both counters' totals); returns both rates per
        minute since the oldest sample still in the window, or None while the samples span under a second.
        A counter that went down (a restart of the process's metrics) starts the window again."""
        if self._samples and (first < self._samples[-1][1] or second < self._samples[-1][2]):
            self._samples.clear()
        self._samples.append((now_s, first, second))
        while len(self._samples) > 2 and now_s - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        oldest = self._samples[0]
        span_s = now_s - oldest[0]
        if span_s < 1.0:
            return None, None
        return (first - oldest[1]) * 60.0 / span_s, (second - oldest[2]) * 60.0 / span_s


_RATES = RateWindow()  # the metrics are the process's, so is the window


def _counter_total(metric: Any, label: str, value: str) -> float:
    return float(
        sum(
            sample.value
            for family in metric.collect()
            for sample in family.samples
            if sample.name.endswith("_total") and sample.labels.get(label) == value
        )
    )


def operator_action(actor: str, action: str, count: int, **details: Any) -> None:
    """Log what an operator did: who (the token's name), what, and how many records it touched."""
    log.info("operator action", actor=actor, action=action, count=count, **details)


# `events tail --channel GLOB`: events read per store query when following, and at most this many of the
# newest events looked through for the first lines (the store matches exact channel names only).
GLOB_FEED_PAGE = 1000
GLOB_FEED_SCAN = 100_000

TEST_CHANNEL = "relay/test"
TEST_EXCERPT_BYTES = 1024


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

    # ------------------------------------------------------------------------------------ subscribers

    async def subscribers(self) -> list[SubscriberHealth]:
        """Every configured subscriber with its pending and dead counts, circuit and last success."""
        states = await self.store.subscriber_states()
        return [subscriber_health(s.name, s.url, states.get(s.name)) for s in self.config.subscribers]

    async def instances(self) -> list[InstanceRecord]:
        """The live `relay serve` instances on this store (heartbeat within `LIVE_WITHIN_S`), oldest first."""
        return await self.store.list_instances(live_within_s=LIVE_WITHIN_S)

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

    # ------------------------------------------------------------------------------------ following

    async def event_feed(self, flt: EventFilter, *, after: int | None = None) -> EventFeed:
        """New events as they are stored, for `relay events tail`; oldest first either way.

        Args:
            flt: which events; `flt.channel` may be a glob such as `order/*`; `flt.limit` caps the answer
                (`flt.newest_first` is ignored).
            after: a cursor from an earlier answer: the matching events stored since. None: the `flt.limit`
                newest matching events, to start from (with a glob, among the newest `GLOB_FEED_SCAN` events).
        """
        if flt.channel is not None and is_channel_glob(flt.channel):
            return await self._glob_feed(flt, ChannelMatcher([flt.channel]), after)
        if after is not None:
            rows = await self.store.list_events_after(dataclasses.replace(flt, newest_first=False), after_seq=after)
            return EventFeed([e for _, e in rows], rows[-1][0] if rows else after)
        # The cursor is read first: an event stored while the newest are read is either among them or after it.
        newest_seq = await self.store.last_event_seq()
        rows = await self.store.list_events_after(dataclasses.replace(flt, newest_first=True), after_seq=0)
        rows.reverse()
        return EventFeed([e for _, e in rows], max(newest_seq, rows[-1][0] if rows else 0))

    async def _glob_feed(self, flt: EventFilter, matcher: ChannelMatcher, after: int | None) -> EventFeed:
        # The store filters exact channel names only: read every channel and keep the matching events.
        wanted = flt.limit
        every = dataclasses.replace(flt, channel=None)
        if after is not None:
            found: list[Event] = []
            cursor = after
            while len(found) < wanted:
                page = await self.store.list_events_after(
                    dataclasses.replace(every, newest_first=False, limit=GLOB_FEED_PAGE), after_seq=cursor
                )
                for seq, event in page:
                    cursor = seq  # past this event whether it matches or not: never read again
                    if matcher.matches(event.channel):
                        found.append(event)
                        if len(found) == wanted:
                            break
                if len(page) < GLOB_FEED_PAGE:
                    break
            return EventFeed(found, cursor)
        newest_seq = await self.store.last_event_seq()
        scan = min(max(wanted, 1) * 4, GLOB_FEED_SCAN)
        while True:  # the newest `scan` events; more only while too few match and more are stored
            rows = await self.store.list_events_after(
                dataclasses.replace(every, newest_first=True, limit=scan), after_seq=0
            )
            matching = [(seq, e) for seq, e in rows if matcher.matches(e.channel)][:wanted]
            if len(matching) >= wanted or len(rows) < scan or scan >= GLOB_FEED_SCAN:
                break
            scan = min(scan * 4, GLOB_FEED_SCAN)
        matching.reverse()
        return EventFeed([e for _, e in matching], max(newest_seq, rows[0][0] if rows else 0))

    # ------------------------------------------------------------------------------------ console

    async def overview(self) -> Overview:
        """Rates, pending and dead counts, the oldest pending delivery, and per subscriber and source health."""
        from relay import metrics

        now = datetime.now(UTC)
        ingest, delivered = _RATES.observe(
            time.monotonic(),
            _counter_total(metrics.EVENTS_RECEIVED, "result", "accepted"),
            _counter_total(metrics.WEBHOOK_ATTEMPTS, "outcome", "delivered"),
        )
        subscribers = await self.subscribers()
        statuses = []
        for health in subscribers:
            live = self.dispatcher.circuit_status(health.name) if self.dispatcher is not None else None
            if live is not None:
                health = _with_circuit(health, live[0])
            statuses.append(SubscriberStatus(health, live[1] if live is not None else None))
        return Overview(
            at=now,
            ingest_per_min=ingest,
            delivered_per_min=delivered,
            pending=sum(h.pending for h in subscribers),
            dead=sum(h.dead for h in subscribers),
            oldest_pending_at=await self.store.oldest_pending_overall_at(),
            subscribers=statuses,
            sources=await self.sources_status(),
        )

    # The running polling service: set by `of_running`; without it a source's resources are not known.
    poller: PollScheduler | None = None

    @classmethod
    def of_running(cls, runtime: Runtime) -> Operations:
        """The operations of a running relay, with its polling service (the console's view)."""
        ops = cls.of(runtime)
        ops.poller = runtime.poller
        return ops

    async def sources_status(self) -> list[SourceStatus]:
        """Every configured source; for polled ones each resource's last poll, last error and checkpoint, and
        when the source's access token expires."""
        from relay.poll import load_builders
        from relay.poll.scheduler import BUILDERS

        load_builders()
        running = {(r.source, r.resource): r for r in (self.poller.status() if self.poller is not None else [])}
        expiries = self.poller.token_expiries() if self.poller is not None else {}
        out = []
        for source in self.config.sources:
            polled = source.kind in BUILDERS
            resources = []
            for (name, resource), status in running.items():
                if name != source.name:
                    continue
                checkpoint = await self.store.get_checkpoint(name, resource)
                resources.append(
                    ResourceHealth(
                        resource=resource,
                        channel=status.channel,
                        last_poll_at=status.last_poll_at,
                        last_success_at=status.last_success_at,
                        last_error=status.last_error,
                        failures=status.failures,
                        checkpoint=checkpoint.high_water if checkpoint is not None else None,
                    )
                )
            out.append(SourceStatus(source.name, source.kind, polled, resources, expiries.get(source.name)))
        return out

    async def retry_now(self, delivery_id: int, *, actor: str) -> DeliveryRecord:
        """Make a pending delivery due now (the dispatcher sends it at once unless its circuit is open or it
        is in flight); returns the delivery as it is now.

        Raises:
            NotFoundError: no such delivery.
            OpsError: the delivery is not pending (a dead one is redriven instead).
        """
        row = await self.store.get_delivery(delivery_id)
        if row is None:
            raise NotFoundError(f"no delivery {delivery_id}")
        if row.state != "pending":
            hint = ": redrive it instead" if row.state == "dead" else ""
            raise OpsError(f"delivery {delivery_id} is {row.state}; only a pending delivery can be retried now{hint}")
        changed = await self.store.make_due_now(delivery_id)
        operator_action(actor, "retry now", int(changed), delivery_id=delivery_id, subscriber=row.subscriber)
        found = await self.store.get_delivery(delivery_id)
        return delivery_record(found or row)

    async def send_test_event(self, subscriber: str, *, actor: str) -> TestDelivery:
        """POST one signed test event (channel `relay/test`, a fresh `webhook-id`) to a subscriber now.

        It goes directly, not through the store: it is signed with the subscriber's secrets and sent with
        its headers, timeout and SSRF guard, but it is never retried, not counted as a delivery, and does not
        wait behind queued deliveries.

        Raises:
            UnknownSubscriberError: `subscriber` is not configured.
        """
        result = await self._post_test_event(subscriber)
        operator_action(actor, "send test event", 1, subscriber=subscriber, status=result.status, error=result.error)
        return result

    async def test_circuit(self, subscriber: str, *, actor: str) -> CircuitProbe:
        """Probe a subscriber now with a signed test event; in `relay serve` its answer counts for the circuit
        breaker (a 2xx closes an open circuit at once, so waiting deliveries flow without the cooldown).

        Raises:
            UnknownSubscriberError: `subscriber` is not configured.
        """
        before = self.dispatcher.circuit_status(subscriber) if self.dispatcher is not None else None
        result = await self._post_test_event(subscriber)
        after = (
            self.dispatcher.record_probe(subscriber, result.status, result.error)
            if self.dispatcher is not None
            else None
        )
        operator_action(
            actor, "test circuit", 1, subscriber=subscriber, status=result.status, circuit_before=before, circuit=after
        )
        return CircuitProbe(result, before[0] if before is not None else None, after)

    def record_action(self, actor: str, action: str, count: int, **details: Any) -> None:
        """Log an operator action done through another method of this class (redrive, replay, …)."""
        operator_action(actor, action, count, **details)

    async def _post_test_event(self, name: str) -> TestDelivery:
        import aiohttp
        import orjson

        from relay.guard import GuardedResolver, target_refusal, target_url
        from relay.signing import parse_secret, signature_header

        sub = self.config.subscriber(name)
        if sub is None:
            raise UnknownSubscriberError(name)
        message_id = f"test_{uuid.uuid4().hex}"
        sent_at = datetime.now(UTC)
        body = orjson.dumps(
            {
                "eventId": message_id,
                "documentType": "RelayTest",
                "timestamp": sent_at.isoformat().replace("+00:00", "Z"),
                "data": {"subscriber": name, "message": "a test event sent by an operator; no action is needed"},
            }
        )
        timestamp = int(sent_at.timestamp())
        headers = {
            **sub.headers,
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header([parse_secret(s) for s in sub.secrets], message_id, timestamp, body),
            "relay-channel": TEST_CHANNEL,
            "relay-source": "relay",
            "relay-attempt": "1",
            "relay-replay": "false",
        }
        try:
            target = target_url(sub.url)
        except ValueError:
            return TestDelivery(name, message_id, None, 0.0, "refused: malformed URL", None)
        refusal = target_refusal(target, allow_private_network=sub.allow_private_network)
        if refusal is not None:
            return TestDelivery(name, message_id, None, 0.0, f"refused: {refusal}", None)
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(lambda _host: sub.allow_private_network))
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        excerpt: str | None = None
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            try:
                async with session.post(
                    target,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=sub.timeout_s),
                ) as resp:
                    status = resp.status
                    excerpt = (await resp.content.read(TEST_EXCERPT_BYTES)).decode("utf-8", "replace")
            except TimeoutError:
                error = "timeout"
            except (aiohttp.ClientError, OSError) as exc:  # the SSRF resolver refuses with OSError subclasses
                error = f"{type(exc).__name__}: {exc}"[:300]
        return TestDelivery(name, message_id, status, (time.perf_counter() - started) * 1000, error, excerpt)

    # -------------------------------------------------------------------------------- current state

    async def show_state(self, noun: str, key: str) -> StateRecord:
        """The latest event of one business key (`inventory`, `P-100|MAIN`).

        Raises:
            NotFoundError: nothing was ever stored for that key.
        """
        record = await self.store.get_state(noun, key)
        if record is None:
            raise NotFoundError(f"no state for {noun} key {key!r}")
        return record

    async def list_state(self, noun: str, *, prefix: str = "", after: str = "", limit: int = 100) -> list[StateRecord]:
        """The current state of the keys of `noun` starting with `prefix`, in key order after `after`."""
        return await self.store.list_state(noun, prefix=prefix, after=after, limit=limit)

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

    async def schema_version(self) -> int:
        """The store's schema version; opening the store has applied its pending migrations (`relay migrate`)."""
        return await self.store.schema_version()


def _with_circuit(health: SubscriberHealth, circuit: str) -> SubscriberHealth:
    return SubscriberHealth(
        name=health.name,
        url=health.url,
        disabled=health.disabled,
        disabled_reason=health.disabled_reason,
        pending=health.pending,
        dead=health.dead,
        circuit=circuit,
        last_success_at=health.last_success_at,
    )


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


async def copy_store(
    from_url: str, to_url: str, *, progress: Callable[[str, int], None] | None = None
) -> list[TableCount]:
    """Copy an SQLite store into an empty PostgreSQL database, verified by row counts (`relay store copy`).

    Raises:
        OpsError: a URL of the wrong kind, a target that holds data, a store that cannot be opened, or counts
            that differ (the message says which; nothing is kept in the target then).
    """
    from relay.store.copy import CopyError
    from relay.store.copy import copy_store as copy_tables

    try:
        return await copy_tables(from_url, to_url, progress=progress)
    except (CopyError, StoreUnavailable, ValueError) as exc:
        raise OpsError(str(exc)) from None


@contextlib.asynccontextmanager
async def operations(config: Config, specs: SpecRegistry | None = None) -> AsyncIterator[Operations]:
    """Open the configured store for the length of one operator command (the CLI's way in).

    With `specs`, the store runs the configured rules on the events it stores (a quarantine retry), as
    `relay serve` would.
    """
    store = open_configured_store(config)
    try:
        await store.open()
    except StoreUnavailable as exc:  # unreachable server, newer schema: one line for the operator
        raise OpsError(f"store: {exc}") from None
    try:
        ops = Operations(store, config, specs=specs)
        if specs is not None:
            apply_rules(store, config, specs, ops.router)
        yield ops
    finally:
        await store.close()


# ------------------------------------------------------------------------------------ onboarding (no store)


@contextlib.asynccontextmanager
async def _polled_source(config: Config, specs: SpecRegistry, source_name: str) -> AsyncIterator[tuple[Any, list[Any]]]:
    """The fetcher and resources of a polled source, for commands that read the ERP and store nothing.

    Raises:
        OpsError: no such source, a push source, or a source that cannot start (the message says why).
    """
    import aiohttp

    from relay.poll import load_builders
    from relay.poll.scheduler import build_source

    source = config.source(source_name)
    if source is None:
        raise NotFoundError(f"no source named {source_name!r}")
    load_builders()
    async with aiohttp.ClientSession(headers={"User-Agent": "erp-relay"}) as session:
        try:
            built = build_source(source, session, specs)
        except (ValueError, OSError) as exc:
            raise OpsError(f"{source_name}: cannot start: {exc}") from None
        if built is None:
            raise OpsError(f"{source_name} is a push source ({source.kind}): it has nothing to read")
        fetcher, resources = built
        try:
            yield fetcher, resources
        finally:
            await fetcher.close()


def _resource_key(kind: str) -> str:
    return {"x3": "class", "sxe": "feed"}.get(kind, "url")


def _resource_label(kind: str, resource: Any) -> str:
    # http-json resources are named `index:url` inside the relay; the configuration names them by `url`.
    return str(resource.options.get("url", resource.name)) if kind == "http-json" else str(resource.name)


async def discover_source(
    config: Config,
    specs: SpecRegistry,
    source_name: str,
    *,
    resource: str | None = None,
    sample: int = 20,
    mask: str | None = None,
) -> list[ResourceDraft]:
    """Sample up to `sample` records of each resource of a polled source and draft its mapping; stores nothing.

    Returns `relay.onboarding.discover.ResourceDraft`s, one per resource (only `resource` when given).

    Raises:
        OpsError: no such source or resource, a push source, a bad mask pattern, or a read that failed.
    """
    from relay.onboarding.discover import (
        DEFAULT_MASK,
        canonical_fields,
        custom_fields,
        profile_fields,
        propose,
    )
    from relay.poll.base import PollError

    try:
        pattern = re.compile(mask if mask is not None else DEFAULT_MASK)
    except re.error as exc:
        raise OpsError(f"--mask: not a regular expression: {exc}") from None
    found = config.source(source_name)
    kind = found.kind if found is not None else ""
    drafts: list[ResourceDraft] = []
    async with _polled_source(config, specs, source_name) as (fetcher, resources):
        chosen = [r for r in resources if resource is None or resource in (r.name, _resource_label(kind, r))]
        if not chosen:
            names = ", ".join(_resource_label(kind, r) for r in resources)
            raise NotFoundError(f"{source_name} has no resource {resource!r} (it has {names})")
        for spec in chosen:
            records: list[Any] = []
            cursor: str | None = None
            try:
                while len(records) < sample:
                    page = await fetcher.listing(spec, cursor=cursor)
                    records.extend(page.records)
                    if not page.next_cursor:
                        break
                    cursor = page.next_cursor
            except PollError as exc:
                raise OpsError(f"{source_name} {_resource_label(kind, spec)}: read failed: {exc}") from None
            records = records[:sample]
            profiles = profile_fields(records, pattern)
            proposals = propose(canonical_fields(specs.channels[spec.channel].payload_schema), spec.mapping, profiles)
            drafts.append(
                ResourceDraft(
                    _resource_key(kind),
                    _resource_label(kind, spec),
                    spec.channel,
                    len(records),
                    profiles,
                    proposals,
                    custom_fields(profiles, spec.mapping, proposals),
                )
            )
    return drafts


async def preview_source(
    config: Config,
    specs: SpecRegistry,
    source_name: str,
    *,
    keys: list[str] | None = None,
    limit: int | None = None,
) -> list[PreviewRow]:
    """What subscribers would receive from a polled source's current records; stores nothing, opens no store.

    With `keys`, exactly those entity keys (filtered from a scan of every resource; a key no resource has is
    a `not found` row); without, every record up to `limit` records in total.

    Raises:
        OpsError: no such source, a push source, or a read that failed (the message says why).
    """
    from relay.onboarding.preview import missing_rows, preview_row
    from relay.poll.base import PollError

    wanted = set(keys) if keys is not None else None
    rows: list[PreviewRow] = []
    now = datetime.now(UTC)
    async with _polled_source(config, specs, source_name) as (fetcher, resources):
        try:
            for spec in resources:
                cursor: str | None = None
                while limit is None or len(rows) < limit:
                    page = await fetcher.changes(spec, since=None, cursor=cursor)
                    for record in page.records:
                        row = preview_row(source_name, spec, record, specs, now)
                        if wanted is None or row.key in wanted:
                            rows.append(row)
                    if not page.next_cursor:
                        break
                    cursor = page.next_cursor
        except PollError as exc:
            raise OpsError(f"poll failed: {exc}") from None
    if keys is not None:
        by_key = {row.key: row for row in rows if row.key is not None}  # a key read twice is shown once
        rows = [by_key[k] for k in keys if k in by_key] + missing_rows(keys, by_key, resources)
    return rows[:limit] if limit is not None else rows


async def discover_ion(
    config: Config,
    specs: SpecRegistry,
    source_name: str,
    *,
    noun: str | None = None,
    sample: int = 20,
    mask: str | None = None,
) -> list[ResourceDraft]:
    """Draft the mapping of an ion-ims source from the BODs it pushed: stored originals and quarantined BODs.

    Reads up to `sample` BODs per document (`Sync.SalesOrder`), newest first; with `noun`, only that noun's
    documents. Writes nothing to the store; a store that does not exist yet is an error, not a new file.

    Raises:
        OpsError: not an ion-ims source, a bad mask or mapping, no database yet, or no BOD of `noun` stored.
    """
    from relay.config import IonImsSource
    from relay.ingest.bod import BodError, parse_bod, parse_mapping_overrides
    from relay.onboarding.bod_discover import group_by_document, ion_draft
    from relay.onboarding.discover import DEFAULT_MASK
    from relay.store.sqlite import sqlite_path_from_url

    source = config.source(source_name)
    if not isinstance(source, IonImsSource):
        raise NotFoundError(f"{source_name} is not an ion-ims source")
    try:
        pattern = re.compile(mask if mask is not None else DEFAULT_MASK)
    except re.error as exc:
        raise OpsError(f"--mask: not a regular expression: {exc}") from None
    try:
        mappings = parse_mapping_overrides(source.mappings)
    except ValueError as exc:
        raise OpsError(f"{source_name}: mappings: {exc}") from None
    if config.store.url.startswith("sqlite:") and not sqlite_path_from_url(config.store.url).exists():
        raise OpsError(f"{source_name}: no BODs stored yet ({config.store.url} does not exist); let ION push some")
    bodies: list[bytes] = []
    async with operations(config) as ops:
        seen: set[bytes] = set()
        for event in await ops.store.list_events(EventFilter(source=source_name, limit=sample * 50, newest_first=True)):
            if event.original is not None and event.original not in seen:
                seen.add(event.original)
                bodies.append(event.original)
        for row in await ops.store.list_quarantine(source=source_name, limit=sample * 10):
            full = await ops.store.get_quarantine(row.id)
            if full is not None and full.body is not None and (full.content_type or "").endswith("xml"):
                bodies.append(full.body)
    per_document: list[tuple[str, Any]] = []
    counts: dict[str, int] = {}
    for body in bodies:
        try:
            bod = parse_bod(body)
        except BodError:
            continue  # broken XML has no element paths to show; `relay quarantine show` has the reason
        if noun is not None and noun not in (bod.noun, bod.document_name):
            continue
        if counts.get(bod.document_name, 0) < sample:
            counts[bod.document_name] = counts.get(bod.document_name, 0) + 1
            per_document.append((bod.document_name, bod.noun_elements))
    if not per_document:
        what = f"no BOD of {noun}" if noun is not None else "no BODs"
        raise NotFoundError(f"{source_name}: {what} stored or quarantined yet; let ION push some")
    drafts = []
    for name, records in sorted(group_by_document(per_document).items()):
        mapping = mappings.get(name)
        channel = specs.channels.get(mapping.channel) if mapping is not None else None
        drafts.append(ion_draft(name, mapping, channel.payload_schema if channel else None, records, pattern))
    return drafts

"""The store's public contract: record types and the abstract Store every backend implements."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import orjson

from relay.events import Event, parse_ts

__all__ = [
    "DEFAULT_QUARANTINE_MAX_BYTES",
    "Checkpoint",
    "ClaimRequest",
    "ClaimedDelivery",
    "CommandFilter",
    "CommandRow",
    "Completion",
    "DeliveryFilter",
    "DeliveryPlan",
    "DeliveryRow",
    "Derivation",
    "Deriver",
    "EventFilter",
    "IngestOutcome",
    "InstanceRecord",
    "NewCommand",
    "NewEvent",
    "PollCommit",
    "QuarantineEntry",
    "QuarantineRow",
    "ReplayEvent",
    "RuleState",
    "StateRecord",
    "Store",
    "StoreUnavailable",
    "SubscriberState",
    "attempt_from_row",
    "claimed_from_row",
    "command_from_row",
    "confirm_from_row",
    "quarantine_from_row",
    "replay_event_from_row",
]


DEFAULT_QUARANTINE_MAX_BYTES = 64 * 1024 * 1024


class StoreUnavailable(Exception):
    """The store could not commit or answer (disk full, locked, closed): callers answer 503."""


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    """One delivery to create with an event.

    `check_stale`: per-key ordering without `deliver_stale`: created `stale` when a newer version of the
    key was already delivered to this subscriber. `collapse`: pending older versions are superseded.
    """

    subscriber: str
    check_stale: bool = False
    collapse: bool = False


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to store with the deliveries fan-out decided for it.

    `track_state`: the event becomes its key's current state when it is the newest version (derived alert
    events are not states of their key and set it False).
    """

    event: Event
    deliveries: Sequence[DeliveryPlan] = ()
    track_state: bool = True


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    event_id: str
    status: Literal["accepted", "duplicate"]
    deliveries: int = 0


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    source: str
    reason: str
    body: bytes
    received_at: datetime
    channel: str | None = None
    details: list[dict[str, Any]] = field(default_factory=list)
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    id: int
    received_at: str
    source: str
    channel: str | None
    reason: str
    details: list[dict[str, Any]]
    content_type: str | None
    size: int
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """A running `relay serve` as its last heartbeat recorded it (`relay instances`).

    Attributes:
        id: the instance's owner id on leases (host/pid/random).
        host: the host name it runs on.
        pid: its process id.
        version: the relay version it runs.
        started_at: when it started.
        heartbeat_at: its last heartbeat (the database server's clock on a shared store).
        poll_leases: (source, resource) poll leases it held at that heartbeat.
        deliveries_in_flight: deliveries it was sending at that heartbeat.
    """

    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
    poll_leases: int
    deliveries_in_flight: int


@dataclass(frozen=True, slots=True)
class ConfirmEntry:
    """A ConfirmBOD to send to ION: the IMS ParameterRequest (JSON object text) and the BOD bytes.

    Attributes:
        source: The ion-ims source whose BOD is confirmed.
        bod_id: The BODID of the BOD confirmed (for logs and operators), if it had one.
        parameters: The ParameterRequest JSON text.
        payload: The ConfirmBOD XML.
        created_at: When it was queued; retries count their age from here.
    """

    source: str
    bod_id: str | None
    parameters: str
    payload: bytes
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ConfirmRow:
    """A queued ConfirmBOD as stored, with its attempts so far."""

    id: int
    source: str
    bod_id: str | None
    parameters: str
    payload: bytes
    created_at: datetime
    attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events: every field narrows; `limit` and `newest_first` apply to lists, a replay reads all in
    arrival order."""

    channel: str | None = None
    source: str | None = None
    entity_key: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    # Additive to the oldest-first listing: the console and lists show the latest arrivals first.
    newest_first: bool = False
    event_id: str | None = None  # lists only (a replay takes its event id apart)


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """Claim up to `limit` due deliveries of one subscriber until `lease_until`."""

    subscriber: str
    limit: int
    per_key: bool
    lease_until: datetime


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A leased delivery with what is needed to send it."""

    id: int
    subscriber: str
    attempts: int
    created_at: datetime
    replay: bool
    entity_key: str | None
    version_order: str
    event_id: str
    channel: str
    source: str
    received_at: datetime
    payload: bytes
    original: bytes | None
    original_type: str | None
    #: The claim's fencing token (PostgreSQL): its completion must present it, so a claim whose lease expired
    #: cannot finish a delivery claimed again since. None where one process owns the store (SQLite).
    lease_token: int | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """The record of one attempt and the retry policy's decision for its delivery."""

    delivery_id: int
    subscriber: str
    owner: str
    attempt: int
    started_at: datetime
    duration_ms: float
    status: int | None
    error: str | None
    response_excerpt: bytes | None
    state: Literal["pending", "delivered", "dead"]
    next_attempt_at: datetime | None
    entity_key: str | None = None
    version_order: str = ""
    track_key: bool = False
    mark_older_stale: bool = False
    #: The `ClaimedDelivery.lease_token` this attempt answers (None: the owner alone is checked).
    lease_token: int | None = None


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    event_id: str | None = None
    subscriber: str | None = None
    state: str | None = None
    channel: str | None = None
    entity_key: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: int
    event_id: str
    subscriber: str
    state: str
    attempts: int
    created_at: str
    next_attempt_at: str
    replay: bool
    last_status: int | None
    last_error: str | None
    finished_at: str | None
    channel: str
    entity_key: str | None


@dataclass(frozen=True, slots=True)
class SubscriberState:
    subscriber: str
    disabled: bool = False
    disabled_reason: str | None = None
    disabled_at: str | None = None
    last_success_at: str | None = None
    circuit_state: str = "closed"
    circuit_changed_at: str | None = None
    pending: int = 0
    dead: int = 0


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """What a replay needs to route an event again."""

    seq: int
    event_id: str
    channel: str
    source: str
    entity_key: str | None
    version_order: str
    payload: bytes
    received_at: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a poll of one source resource stands."""

    high_water: str | None = None
    last_key: str | None = None
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PollCommit:
    """What one page of a poll commits atomically: its events, record hashes and the new checkpoint."""

    source: str
    resource: str
    events: Sequence[NewEvent]
    hashes: Sequence[tuple[str, str]]
    checkpoint: Checkpoint
    forget_keys: Sequence[str] = ()
    # The resource's observed record shape after this page (schema drift), saved with it; None: unchanged.
    shape: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class NewCommand:
    """A write-back command to store: `order_key` serialises commands of one customer, `reference` finds
    the ERP document again after an attempt whose outcome was unknown."""

    id: str
    source: str
    command: str
    idempotency_key: str
    body_hash: str
    body: bytes
    order_key: str
    reference: str | None
    now: datetime


@dataclass(frozen=True, slots=True)
class CommandRow:
    """A stored command and where it stands."""

    id: str
    source: str
    command: str
    idempotency_key: str
    body_hash: str
    body: bytes
    order_key: str
    reference: str | None
    status: Literal["accepted", "running", "succeeded", "failed"]
    attempts: int
    next_attempt_at: datetime
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: datetime
    finished_at: datetime | None
    window_start_at: datetime


class Row(Protocol):
    """A result row read by position (an sqlite3 row, a tuple, an asyncpg Record)."""

    def __getitem__(self, index: int, /) -> Any: ...


def event_from_row(r: Row) -> Event:
    """An Event from its row (event_id, channel, source, tenant_id, entity_key, version, occurred_at,
    received_at, payload, original, original_type), as both backends select it."""
    return Event(
        event_id=r[0],
        channel=r[1],
        source=r[2],
        tenant_id=r[3],
        entity_key=r[4],
        version=r[5],
        occurred_at=parse_ts(r[6]),
        received_at=parse_ts(r[7]),
        payload=bytes(r[8]),
        original=bytes(r[9]) if r[9] is not None else None,
        original_type=r[10],
    )


def claimed_from_row(r: Row, lease_token: int | None = None) -> ClaimedDelivery:
    """A ClaimedDelivery from its row (delivery id, subscriber, attempts, created_at, replay, entity_key,
    version_order, then the event's id, channel, source, received_at, payload, original, original_type), as both
    backends select it; `lease_token` where the backend fences claims."""
    return ClaimedDelivery(
        id=r[0],
        subscriber=r[1],
        attempts=r[2],
        created_at=parse_ts(r[3]),
        replay=bool(r[4]),
        entity_key=r[5],
        version_order=r[6],
        event_id=r[7],
        channel=r[8],
        source=r[9],
        received_at=parse_ts(r[10]),
        payload=bytes(r[11]),
        original=bytes(r[12]) if r[12] is not None else None,
        original_type=r[13],
        lease_token=lease_token,
    )


def confirm_from_row(r: Row) -> ConfirmRow:
    """A queued ConfirmBOD as both backends select it."""
    return ConfirmRow(
        id=r[0],
        source=r[1],
        created_at=parse_ts(r[2]),
        bod_id=r[3],
        parameters=r[4],
        payload=bytes(r[5]),
        attempts=r[6],
        last_error=r[7],
    )


def quarantine_from_row(r: Row, *, with_body: bool = False) -> QuarantineRow:
    """A quarantine entry as both backends select it: column 7 is the body's size in a list, the body itself
    when one entry is shown (`with_body`)."""
    body = bytes(r[7]) if with_body else None
    return QuarantineRow(
        id=r[0],
        received_at=r[1],
        source=r[2],
        channel=r[3],
        reason=r[4],
        details=orjson.loads(r[5]),
        content_type=r[6],
        size=len(body) if body is not None else r[7],
        body=body,
    )


def attempt_from_row(r: Row) -> dict[str, Any]:
    """One recorded attempt of a delivery, as the CLI and the admin API show it."""
    return {
        "attempt": r[0],
        "startedAt": r[1],
        "durationMs": r[2],
        "status": r[3],
        "error": r[4],
        "response": bytes(r[5]).decode("utf-8", "replace") if r[5] is not None else None,
    }


def replay_event_from_row(r: Row) -> ReplayEvent:
    """An event as a replay pages through them (`seq` orders the pages)."""
    return ReplayEvent(
        seq=r[0],
        event_id=r[1],
        channel=r[2],
        source=r[3],
        entity_key=r[4],
        version_order=r[5],
        payload=bytes(r[6]),
        received_at=r[7],
    )


def delivery_from_row(r: Row) -> DeliveryRow:
    """A DeliveryRow from its row, as both backends select it."""
    return DeliveryRow(
        id=r[0],
        event_id=r[1],
        subscriber=r[2],
        state=r[3],
        attempts=r[4],
        created_at=r[5],
        next_attempt_at=r[6],
        replay=bool(r[7]),
        last_status=r[8],
        last_error=r[9],
        finished_at=r[10],
        channel=r[11],
        entity_key=r[12],
    )


def state_from_row(r: Row) -> StateRecord:
    """A StateRecord from its row, as both backends select it."""
    return StateRecord(
        noun=r[0],
        entity_key=r[1],
        channel=r[2],
        version=r[3],
        event_id=r[4],
        received_at=parse_ts(r[5]),
        deleted=bool(r[6]),
        payload=bytes(r[7]),
    )


def command_from_row(r: Row) -> CommandRow:
    """A command as both backends select it (`id, source, command, …, window_start_at`: text times, JSON texts)."""
    return CommandRow(
        id=r[0],
        source=r[1],
        command=r[2],
        idempotency_key=r[3],
        body_hash=r[4],
        body=bytes(r[5]),
        order_key=r[6],
        reference=r[7],
        status=r[8],
        attempts=int(r[9]),
        next_attempt_at=parse_ts(r[10]),
        result=orjson.loads(r[11]) if r[11] is not None else None,
        error=orjson.loads(r[12]) if r[12] is not None else None,
        created_at=parse_ts(r[13]),
        finished_at=parse_ts(r[14]) if r[14] is not None else None,
        window_start_at=parse_ts(r[15]),
    )


@dataclass(frozen=True, slots=True)
class CommandFilter:
    source: str | None = None
    status: str | None = None
    command: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class StateRecord:
    """The latest event of one business key (by version); `deleted` when that event was a deletion."""

    noun: str
    entity_key: str
    channel: str
    version: str | None
    event_id: str
    received_at: datetime
    deleted: bool
    payload: bytes


@dataclass(frozen=True, slots=True)
class RuleState:
    """Where one derived-event rule stands for one key: fired and not cleared (`active`), as of which version."""

    rule: str
    entity_key: str
    active: bool
    version_order: str
    event_id: str


@dataclass(frozen=True, slots=True)
class Derivation:
    """What the rules make of a batch of new events: derived events to store with it, and the new rule states."""

    events: Sequence[NewEvent] = ()
    states: Sequence[RuleState] = ()


class Deriver(Protocol):
    """Derived-event rules, run by the store inside the transaction that stores their triggering events."""

    @property
    def channels(self) -> frozenset[str]:
        """The channels any rule listens on (the store skips the rule-state read for other batches)."""
        ...

    def derive(self, events: Sequence[Event], states: dict[tuple[str, str], RuleState]) -> Derivation:
        """Evaluate the rules over new events (arrival order) given the stored states of their keys."""
        ...


class Store(abc.ABC):
    """Durable storage of events, deliveries and checkpoints.

    Writes go through one batching writer (group commit): `ingest` returns only once the events and
    their deliveries are committed, and raises StoreUnavailable when they are not.
    """

    #: The backend's SQL dialect: which `sql/` queries and numbered migrations it runs.
    dialect: str = ""
    #: Most bytes quarantined inputs may hold together (`quarantine.max_bytes`); the oldest go first past it.
    quarantine_max_bytes: int = DEFAULT_QUARANTINE_MAX_BYTES
    #: Several relay processes may serve from this store at once (PostgreSQL): they share circuit states.
    shared: bool = False
    #: The derived-event rules applied in every ingest transaction (None: no rules).
    deriver: Deriver | None = None

    def set_deriver(self, deriver: Deriver | None) -> None:
        """Apply `deriver` to every later ingest and poll commit, in the same transaction (reload swaps it)."""
        self.deriver = deriver

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending commits and disconnect."""

    @abc.abstractmethod
    def add_commit_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` (no arguments, must not block) after every commit that created due deliveries.

        The dispatcher registers its wake-up here so new work is sent at once instead of at the next poll.
        """

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable unless a write would be committed and kept now (what `/readyz` reports)."""

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The highest applied migration number."""

    @abc.abstractmethod
    async def ingest(self, items: Sequence[NewEvent]) -> list[IngestOutcome]:
        """Store events with their deliveries atomically; known event ids are duplicates, unchanged."""

    @abc.abstractmethod
    async def quarantine(self, entry: QuarantineEntry) -> int:
        """Keep refused input for inspection; returns the quarantine id.

        In the same transaction, the oldest entries are deleted until all of them hold at most
        `quarantine_max_bytes` (the new entry itself is always kept).
        """

    @abc.abstractmethod
    async def list_events(self, flt: EventFilter) -> list[Event]:
        """Events matching the filter, in arrival order, or the latest first with `flt.newest_first`."""

    @abc.abstractmethod
    async def list_events_after(self, flt: EventFilter, *, after_seq: int) -> list[tuple[int, Event]]:
        """Matching events stored after the cursor `after_seq`, each with its own cursor, in the
        order `flt.newest_first` says.

        Cursors grow in commit order, so a follower that keeps the largest one it saw misses no event.
        """

    @abc.abstractmethod
    async def last_event_seq(self) -> int:
        """The cursor of the newest stored event (0 when there is none)."""

    @abc.abstractmethod
    async def get_event(self, event_id: str) -> Event | None:
        """One event by id."""

    @abc.abstractmethod
    async def count_events(self) -> int:
        """How many events are stored."""

    @abc.abstractmethod
    async def list_quarantine(self, *, source: str | None = None, limit: int = 100) -> list[QuarantineRow]:
        """Newest quarantined inputs first (without bodies)."""

    @abc.abstractmethod
    async def get_quarantine(self, quarantine_id: int) -> QuarantineRow | None:
        """One quarantined input with its body."""

    @abc.abstractmethod
    async def delete_quarantine(self, quarantine_id: int) -> bool:
        """Forget a quarantined input (after a successful retry)."""

    @abc.abstractmethod
    async def prune_quarantine(self, cutoff: datetime, *, limit: int = 1000) -> int:
        """Delete up to `limit` quarantined inputs received before `cutoff`, oldest first; returns how many."""

    # -------------------------------------------------------------------------------- ConfirmBODs to ION

    @abc.abstractmethod
    async def enqueue_confirm(self, entry: ConfirmEntry, *, max_pending: int) -> int | None:
        """Queue a ConfirmBOD, due now; returns its id, or None when `max_pending` of that source already wait."""

    @abc.abstractmethod
    async def due_confirms(self, now: datetime, *, limit: int) -> list[ConfirmRow]:
        """Queued ConfirmBODs due at `now`, the earliest first."""

    @abc.abstractmethod
    async def next_confirm_at(self) -> datetime | None:
        """When the earliest queued ConfirmBOD is due, or None when none waits."""

    @abc.abstractmethod
    async def finish_confirm(self, confirm_id: int) -> None:
        """Forget a ConfirmBOD: ION accepted it, or the relay gave up on it."""

    @abc.abstractmethod
    async def retry_confirm(self, confirm_id: int, *, attempts: int, next_attempt_at: datetime, error: str) -> None:
        """Record a failed attempt and when to try again."""

    # -------------------------------------------------------------------------------- deliveries

    @abc.abstractmethod
    async def claim_deliveries(
        self, owner: str, now: datetime, requests: Sequence[ClaimRequest]
    ) -> list[ClaimedDelivery]:
        """Lease due deliveries (one transaction for all requests); per-key requests take key heads only."""

    @abc.abstractmethod
    async def complete_deliveries(self, completions: Sequence[Completion]) -> None:
        """Record attempts and apply decisions (batched with other writes)."""

    @abc.abstractmethod
    async def renew_leases(
        self, owner: str, leases: Sequence[tuple[int, int | None]], lease_until: datetime
    ) -> set[int]:
        """Extend to `lease_until` the leases `owner` still holds on these (delivery id, lease token) pairs:
        attempts still in flight keep their deliveries. Returns the ids renewed; a delivery already completed,
        or whose lease expired and was claimed again since, is not."""

    @abc.abstractmethod
    async def release_leases(self, owner: str) -> int:
        """Give back every lease `owner` holds (clean stop)."""

    @abc.abstractmethod
    async def shift_schedule(self, since: datetime, step_s: float) -> int:
        """The wall clock stepped by `step_s` seconds: move every pending delivery's `next_attempt_at` and every
        lease that lies after `since` (the old clock's now) by the same amount, so retries keep their delays.
        Returns how many deliveries moved."""

    @abc.abstractmethod
    async def set_subscriber_disabled(self, subscriber: str, disabled: bool, reason: str | None) -> None:
        """Disable (410 Gone) or re-enable a subscriber."""

    @abc.abstractmethod
    async def set_circuit_state(self, subscriber: str, state: str) -> None:
        """Record a circuit breaker transition for operators to see."""

    @abc.abstractmethod
    async def subscriber_states(self) -> dict[str, SubscriberState]:
        """Per subscriber: disabled flag, circuit, last success, pending and dead counts."""

    @abc.abstractmethod
    async def next_due_at(self) -> datetime | None:
        """When the earliest pending delivery is due."""

    @abc.abstractmethod
    async def oldest_pending_at(self, subscribers: Sequence[str]) -> dict[str, datetime]:
        """When the oldest delivery waiting or in flight of each of `subscribers` was created (none: absent)."""

    @abc.abstractmethod
    async def list_deliveries(self, flt: DeliveryFilter) -> list[DeliveryRow]:
        """Newest deliveries first."""

    @abc.abstractmethod
    async def get_delivery(self, delivery_id: int) -> DeliveryRow | None:
        """One delivery by id."""

    @abc.abstractmethod
    async def list_attempts(self, delivery_id: int) -> list[dict[str, Any]]:
        """Attempts of one delivery in order."""

    @abc.abstractmethod
    async def oldest_pending_overall_at(self) -> datetime | None:
        """When the oldest delivery still pending was created; None when nothing is pending."""

    @abc.abstractmethod
    async def make_due_now(self, delivery_id: int) -> bool:
        """A pending delivery waiting for its next attempt becomes due now; False when it is not pending
        (delivered, dead, …), unknown, or already due."""

    @abc.abstractmethod
    async def redrive(self, flt: DeliveryFilter) -> int:
        """Dead deliveries matching the filter become pending again, due now; returns how many."""

    @abc.abstractmethod
    async def events_page(
        self, flt: EventFilter, *, event_id: str | None, after_seq: int, limit: int
    ) -> list[ReplayEvent]:
        """A page of events for replay, in arrival order after `after_seq` (`flt.newest_first`, `flt.limit` and
        `flt.event_id` unused: the event id is its own argument)."""

    @abc.abstractmethod
    async def count_matching_events(self, flt: EventFilter, *, event_id: str | None) -> int:
        """How many events a replay filter selects."""

    @abc.abstractmethod
    async def insert_replay_deliveries(self, rows: Sequence[tuple[ReplayEvent, str]]) -> int:
        """New pending deliveries flagged replay, one per (event, subscriber); returns how many."""

    # -------------------------------------------------------------------------------- polling

    @abc.abstractmethod
    async def get_checkpoint(self, source: str, resource: str) -> Checkpoint | None:
        """The saved checkpoint of a resource, if any."""

    @abc.abstractmethod
    async def record_hashes(self, source: str, resource: str, keys: Sequence[str]) -> dict[str, str]:
        """Content hashes known for these record keys."""

    @abc.abstractmethod
    async def known_record_keys(self, source: str, resource: str) -> set[str]:
        """Every record key seen for a resource (deletion detection)."""

    @abc.abstractmethod
    async def commit_poll(self, commit: PollCommit) -> list[IngestOutcome]:
        """Events, hashes and checkpoint in one transaction: a crash repeats at most this page."""

    @abc.abstractmethod
    async def get_observation(self, source: str, resource: str, kind: str) -> dict[str, Any] | None:
        """What was last observed of a resource: `kind` is `shape` (drift) or `health`; None: nothing yet."""

    @abc.abstractmethod
    async def commit_observation(
        self, source: str, resource: str, kind: str, value: Mapping[str, Any], events: Sequence[NewEvent] = ()
    ) -> list[IngestOutcome]:
        """Save an observation and ingest the events it announces (drift, health) in one transaction."""

    @abc.abstractmethod
    async def prune(self, cutoff: datetime, *, limit: int = 5000) -> int:
        """Delete up to `limit` events received before `cutoff` with nothing left to deliver."""

    # -------------------------------------------------------------------------------- instances

    @abc.abstractmethod
    async def heartbeat(self, instance: InstanceRecord, *, forget_after_s: float) -> None:
        """Record that `instance` is alive with its current counts (`heartbeat_at` is the store's clock on a
        shared store), and drop the rows of instances silent for `forget_after_s` seconds."""

    @abc.abstractmethod
    async def forget_instance(self, instance_id: str) -> None:
        """Remove an instance that stopped cleanly from `list_instances`."""

    @abc.abstractmethod
    async def list_instances(self, *, live_within_s: float) -> list[InstanceRecord]:
        """Instances whose last heartbeat is at most `live_within_s` seconds old, oldest started first."""

    # -------------------------------------------------------------------------------- shared rate limits

    async def take_rate_tokens(
        self, subscriber: str, rate_per_s: float, burst: float, wanted: int
    ) -> tuple[int, float]:
        """Take up to `wanted` tokens from the subscriber's bucket shared by every instance on the store.

        Returns (tokens granted, tokens left in the bucket after the take). A store only one process opens
        (SQLite) has nobody to share a limit with: the caller's own bucket limits it, and this grants all.
        """
        return wanted, burst

    async def return_rate_tokens(self, subscriber: str, count: int, burst: float) -> None:
        """Give back tokens taken with `take_rate_tokens` that no delivery used (never above `burst`)."""
        del subscriber, count, burst  # the single-process default shares no bucket to give back to

    # -------------------------------------------------------------------------------- poll leases

    async def hold_poll_lease(self, source: str, resource: str, owner: str, ttl_s: float) -> bool:
        """Take, or renew, the lease to poll one resource for `ttl_s` seconds; False while another owner holds it.

        A store only one process opens (SQLite) has nobody to share with: every lease is held (this default).
        """
        return True

    async def renew_poll_leases(self, owner: str, ttl_s: float) -> int:
        """Extend every poll lease `owner` holds by `ttl_s` from now; returns how many it holds."""
        return 0

    async def release_poll_leases(self, owner: str) -> None:
        """Give up every poll lease of `owner` (a clean stop: the others take over at once)."""
        del owner  # the single-process default holds nothing another process could take over

    # -------------------------------------------------------------------------------- current state

    @abc.abstractmethod
    async def get_state(self, noun: str, entity_key: str) -> StateRecord | None:
        """The latest event of one key of `noun` (`inventory`, `order`, …), or None when none was stored."""

    @abc.abstractmethod
    async def list_state(self, noun: str, *, prefix: str = "", after: str = "", limit: int = 100) -> list[StateRecord]:
        """The current state of the keys of `noun` that start with `prefix`, in key order after `after`."""

    # ------------------------------------------------------------------------------------ commands

    @abc.abstractmethod
    async def submit_command(self, command: NewCommand) -> tuple[CommandRow, bool]:
        """Store a command unless its (source, idempotency key) is known; returns the row and whether it is new.

        Raises:
            StoreUnavailable: nothing was committed.
        """

    @abc.abstractmethod
    async def get_command(self, command_id: str) -> CommandRow | None:
        """One command by id."""

    @abc.abstractmethod
    async def claim_commands(
        self, owner: str, source: str, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[CommandRow]:
        """Lease up to `limit` due commands of `source` (per-key order kept), counting an attempt for each."""

    @abc.abstractmethod
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
        """Record the outcome and store its event in one transaction; False (nothing written) when `owner`
        no longer holds the lease."""

    @abc.abstractmethod
    async def reschedule_command(
        self, command_id: str, owner: str, *, next_attempt_at: datetime, error: dict[str, Any]
    ) -> bool:
        """Give the command back for another attempt at `next_attempt_at`; False when the lease was lost."""

    @abc.abstractmethod
    async def retry_command(self, command_id: str, now: datetime) -> bool:
        """Restart a failed command with a fresh retry window; False when it is not failed."""

    @abc.abstractmethod
    async def renew_command_leases(self, owner: str, command_ids: Sequence[str], lease_until: datetime) -> set[str]:
        """Extend to `lease_until` the leases `owner` still holds on these running commands: an ERP call still in
        flight keeps its command. Returns the ids renewed; a command already finished, or whose lease ran out and
        was taken over since, is not."""

    @abc.abstractmethod
    async def release_command_leases(self, owner: str) -> int:
        """Hand back the commands `owner` holds (a clean stop): they run again at once elsewhere or later."""

    @abc.abstractmethod
    async def list_commands(self, flt: CommandFilter) -> list[CommandRow]:
        """Commands, newest first."""

    @abc.abstractmethod
    async def open_command_counts(self) -> dict[tuple[str, str], int]:
        """(source, command) → commands accepted or running."""

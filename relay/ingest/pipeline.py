"""What every source shares: validate a canonical payload, build the Event, route it, commit it.

Pure parts (`check_payload`, `build_event`, `Router.plan`) are unit-tested without I/O; `Ingestor`
is the thin edge that calls the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from relay.config import SubscriberConfig
from relay.deliver.matching import ChannelMatcher, PayloadFilter
from relay.events import Event, entity_key_for, parse_ts, version_for
from relay.spec import SpecRegistry, ValidationIssue
from relay.store import DeliveryPlan, IngestOutcome, NewEvent, QuarantineEntry, Store

__all__ = [
    "Candidate",
    "Ingestor",
    "PayloadProblem",
    "Router",
    "build_event",
    "check_payload",
]

MAX_EVENT_ID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class PayloadProblem:
    """Why a payload was refused: an HTTP-ish status, a short code, and the JSON-path details."""

    status: int
    error: str
    details: list[ValidationIssue]
    channel: str | None = None

    def details_json(self) -> list[dict[str, Any]]:
        return [{"path": d.path, "message": d.message} for d in self.details]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A validated canonical payload on its channel, with the original document if the source sent one."""

    channel: str
    payload: Mapping[str, Any]
    original: bytes | None = None
    original_type: str | None = None
    version: str | None = None
    entity_key: str | None = None


def check_payload(
    specs: SpecRegistry,
    payload: Any,
    *,
    path_channel: str | None = None,
    allowed_channels: Sequence[str] | None = None,
) -> str | PayloadProblem:
    """Find the payload's channel and validate it; return the channel or the problem.

    The channel comes from the path when given (the documentType must then agree), else from
    `documentType`. Unknown channels are 404; every schema failure is 422 with JSON paths.
    """
    if path_channel is not None and not specs.has_channel(path_channel):
        return PayloadProblem(404, "unknown_channel", [ValidationIssue("$", f"no channel {path_channel!r}")])
    if not isinstance(payload, dict):
        kind = type(payload).__name__ if payload is not None else "null"
        return PayloadProblem(422, "invalid_payload", [ValidationIssue("$", f"expected an object, got {kind}")])
    doc_type = payload.get("documentType")
    channel = path_channel
    if channel is None:
        if not isinstance(doc_type, str) or not doc_type:
            return PayloadProblem(
                422,
                "invalid_payload",
                [ValidationIssue("$.documentType", "documentType is required to find the channel")],
            )
        channel = specs.channel_for_document_type(doc_type)
        if channel is None:
            return PayloadProblem(
                422, "invalid_payload", [ValidationIssue("$.documentType", f"unknown documentType {doc_type!r}")]
            )
    elif isinstance(doc_type, str) and (found := specs.channel_for_document_type(doc_type)) not in (None, channel):
        return PayloadProblem(
            422,
            "invalid_payload",
            [ValidationIssue("$.documentType", f"documentType {doc_type!r} belongs to channel {found!r}")],
            channel,
        )
    if allowed_channels is not None and channel not in allowed_channels:
        return PayloadProblem(
            404, "unknown_channel", [ValidationIssue("$", f"channel {channel!r} is not accepted from this source")]
        )
    issues = specs.validate(channel, payload)
    event_id = payload.get("eventId")
    if not isinstance(event_id, str) or not event_id.strip():
        issues = [*issues, ValidationIssue("$.eventId", "eventId is required: it is the deduplication key")]
    elif len(event_id) > MAX_EVENT_ID_LENGTH:
        issues = [*issues, ValidationIssue("$.eventId", f"eventId is longer than {MAX_EVENT_ID_LENGTH} characters")]
    if issues:
        return PayloadProblem(422, "invalid_payload", issues, channel)
    return channel


def build_event(
    candidate: Candidate,
    *,
    source: str,
    received_at: datetime,
    payload_bytes: bytes | None = None,
) -> Event:
    """The stored Event for a validated candidate (entity key and version by the channel's rules)."""
    payload = candidate.payload
    timestamp = payload.get("timestamp")
    try:
        occurred_at = parse_ts(timestamp) if isinstance(timestamp, str) else received_at
    except ValueError:
        occurred_at = received_at
    tenant = payload.get("tenantId")
    return Event(
        event_id=str(payload["eventId"]),
        channel=candidate.channel,
        source=source,
        tenant_id=tenant if isinstance(tenant, str) else None,
        entity_key=candidate.entity_key or entity_key_for(candidate.channel, payload),
        version=candidate.version or version_for(payload),
        occurred_at=occurred_at,
        received_at=received_at,
        payload=payload_bytes if payload_bytes is not None else orjson.dumps(payload),
        original=candidate.original,
        original_type=candidate.original_type,
    )


@dataclass(frozen=True, slots=True)
class _Route:
    name: str
    channels: ChannelMatcher
    payload_filter: PayloadFilter
    plan: DeliveryPlan


class Router:
    """Which subscribers an event goes to: channel globs and payload filters (pure)."""

    def __init__(self, subscribers: Sequence[SubscriberConfig], disabled: frozenset[str] = frozenset()) -> None:
        self._routes = [
            _Route(
                s.name,
                ChannelMatcher(s.channels),
                PayloadFilter(s.filter),
                DeliveryPlan(
                    s.name,
                    check_stale=s.ordering == "per-key" and not s.deliver_stale,
                    collapse=s.collapse,
                ),
            )
            for s in subscribers
            if s.name not in disabled
        ]

    def plan(self, channel: str, payload: Mapping[str, Any]) -> list[DeliveryPlan]:
        return [r.plan for r in self._routes if r.channels.matches(channel) and r.payload_filter.matches(payload)]

    def subscribers_for(self, channel: str, payload: Mapping[str, Any], only: str | None = None) -> list[str]:
        """Names of the subscribers that match (for replay), optionally only one of them."""
        return [p.subscriber for p in self.plan(channel, payload) if only is None or p.subscriber == only]


class Ingestor:
    """Commits validated candidates with their deliveries, and keeps refused input in quarantine."""

    def __init__(self, store: Store, router: Router) -> None:
        self.store = store
        self.router = router

    async def commit(
        self, source: str, candidates: Sequence[Candidate], *, received_at: datetime
    ) -> list[IngestOutcome]:
        """Store the candidates (one transaction) and return one outcome each.

        Raises:
            StoreUnavailable: nothing was committed.
        """
        items = [
            NewEvent(
                build_event(c, source=source, received_at=received_at),
                self.router.plan(c.channel, c.payload),
            )
            for c in candidates
        ]
        return await self.store.ingest(items)

    async def quarantine(
        self,
        *,
        source: str,
        body: bytes,
        reason: str,
        received_at: datetime,
        channel: str | None = None,
        details: list[dict[str, Any]] | None = None,
        content_type: str | None = None,
    ) -> int:
        """Keep a refused input; returns its quarantine id."""
        return await self.store.quarantine(
            QuarantineEntry(
                source=source,
                reason=reason,
                body=body,
                received_at=received_at,
                channel=channel,
                details=details or [],
                content_type=content_type,
            )
        )

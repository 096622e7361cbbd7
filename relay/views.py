"""The one JSON view of each operator record, shared by the admin API and `relay … --json`.

Every instant goes out as `relay.events.format_ts`: ISO 8601 in UTC with milliseconds and `Z`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from relay.events import Event, format_ts
from relay.onboarding.preview import PreviewRow
from relay.ops import (
    Attempt,
    CircuitProbe,
    DeliveryDetail,
    DeliveryRecord,
    EventDetail,
    EventFeed,
    QuarantineRecord,
    QuarantineRetry,
    ReplayCount,
    StateRecord,
    SubscriberHealth,
    TestDelivery,
)
from relay.store import CommandRow, InstanceRecord

__all__ = [
    "VIEW_MODELS",
    "AttemptView",
    "CircuitProbeView",
    "DeliveryDetailView",
    "DeliveryView",
    "EnabledView",
    "ErrorView",
    "EventDetailView",
    "EventFeedView",
    "EventView",
    "InstanceView",
    "QuarantineRetryView",
    "QuarantineView",
    "RedriveView",
    "ReplayView",
    "SubscriberView",
    "TestDeliveryView",
    "attempt_json",
    "circuit_probe_json",
    "delivery_detail_json",
    "delivery_json",
    "event_detail_json",
    "event_feed_json",
    "event_json",
    "instance_json",
    "preview_row_json",
    "quarantine_json",
    "quarantine_retry_json",
    "replay_json",
    "state_json",
    "subscriber_json",
    "test_delivery_json",
    "ts",
]


def ts(value: datetime | None) -> str | None:
    """The wire form of an instant (None stays None)."""
    return format_ts(value) if value is not None else None


def event_json(event: Event, *, with_payload: bool = True) -> dict[str, Any]:
    """An event; with its payload (and the original document, when the source sent one) unless listed."""
    out: dict[str, Any] = {
        "eventId": event.event_id,
        "channel": event.channel,
        "source": event.source,
        "tenantId": event.tenant_id,
        "entityKey": event.entity_key,
        "version": event.version,
        "occurredAt": format_ts(event.occurred_at),
        "receivedAt": format_ts(event.received_at),
    }
    if with_payload:
        out["payload"] = orjson.loads(event.payload)
        if event.original is not None:
            out["original"] = event.original.decode("utf-8", "replace")
            out["originalType"] = event.original_type
    return out


def event_detail_json(detail: EventDetail) -> dict[str, Any]:
    return {**event_json(detail.event), "deliveries": [delivery_json(d) for d in detail.deliveries]}


def event_feed_json(feed: EventFeed) -> dict[str, Any]:
    """Events oldest first (listed, without payloads) and the cursor that asks for the next ones."""
    return {"cursor": feed.cursor, "events": [event_json(e, with_payload=False) for e in feed.events]}


def delivery_json(d: DeliveryRecord) -> dict[str, Any]:
    return {
        "id": d.id,
        "eventId": d.event_id,
        "subscriber": d.subscriber,
        "channel": d.channel,
        "entityKey": d.entity_key,
        "state": d.state,
        "attempts": d.attempts,
        "createdAt": ts(d.created_at),
        "nextAttemptAt": ts(d.next_attempt_at),
        "replay": d.replay,
        "lastStatus": d.last_status,
        "lastError": d.last_error,
        "finishedAt": ts(d.finished_at),
    }


def attempt_json(a: Attempt) -> dict[str, Any]:
    return {
        "attempt": a.attempt,
        "startedAt": ts(a.started_at),
        "durationMs": a.duration_ms,
        "status": a.status,
        "error": a.error,
        "response": a.response_excerpt,
    }


def delivery_detail_json(detail: DeliveryDetail) -> dict[str, Any]:
    return {**delivery_json(detail.delivery), "attempts": [attempt_json(a) for a in detail.attempts]}


def quarantine_json(q: QuarantineRecord) -> dict[str, Any]:
    """A quarantined input; with its body (as text) when the record carries one."""
    out: dict[str, Any] = {
        "id": q.id,
        "receivedAt": ts(q.received_at),
        "source": q.source,
        "channel": q.channel,
        "reason": q.reason,
        "details": q.details,
        "contentType": q.content_type,
        "size": q.size,
    }
    if q.body is not None:
        out["body"] = q.body.decode("utf-8", "replace")
    return out


def quarantine_retry_json(r: QuarantineRetry) -> dict[str, Any]:
    return {
        "id": r.quarantine_id,
        "stored": r.stored,
        "problems": r.problems,
        "events": [{"eventId": e, "status": s, "deliveries": n} for e, s, n in r.events],
    }


def subscriber_json(s: SubscriberHealth) -> dict[str, Any]:
    return {
        "name": s.name,
        "url": s.url,
        "disabled": s.disabled,
        "disabledReason": s.disabled_reason,
        "pending": s.pending,
        "dead": s.dead,
        "circuit": s.circuit,
        "lastSuccessAt": ts(s.last_success_at),
    }


def instance_json(i: InstanceRecord) -> dict[str, Any]:
    return {
        "id": i.id,
        "host": i.host,
        "pid": i.pid,
        "version": i.version,
        "startedAt": ts(i.started_at),
        "heartbeatAt": ts(i.heartbeat_at),
        "pollLeases": i.poll_leases,
        "deliveriesInFlight": i.deliveries_in_flight,
    }


def replay_json(r: ReplayCount) -> dict[str, Any]:
    return {"events": r.events, "deliveries": r.deliveries, "dryRun": r.dry_run}


# ---------------------------------------------------------------------------------------- the views' schemas
# Pydantic models of the JSON above: the admin API's OpenAPI document is generated from them, and
# tests/unit/test_views.py checks every function's output against its model, so the two cannot drift apart.

Timestamp = Annotated[
    str,
    Field(
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$",
        json_schema_extra={"format": "date-time"},
        examples=["2026-11-20T09:41:56.000Z"],
    ),
]


class _View(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", strict=True, frozen=True)


class ErrorView(_View):
    """Every refusal: a stable code and a sentence for people."""

    error: str
    message: str


class EventView(_View):
    """An event as listed (`event_json(..., with_payload=False)`)."""

    event_id: str
    channel: str
    source: str
    tenant_id: str | None
    entity_key: str | None
    version: str | None
    occurred_at: Timestamp
    received_at: Timestamp


class _DeliveryFields(_View):
    id: int
    event_id: str
    subscriber: str
    channel: str
    entity_key: str | None
    state: str = Field(description="pending, delivered, dead, stale or superseded")
    created_at: Timestamp
    next_attempt_at: Timestamp | None = Field(description="only while pending")
    replay: bool
    last_status: int | None
    last_error: str | None
    finished_at: Timestamp | None


class DeliveryView(_DeliveryFields):
    """One delivery of one event to one subscriber (`delivery_json`)."""

    attempts: int = Field(description="how many attempts were made")


class EventDetailView(EventView):
    """One event with its payload, the original document when the source sent one, and its deliveries."""

    payload: Any = Field(description="the canonical JSON event subscribers receive")
    original: str | None = Field(default=None, description="the source's own document, e.g. a BOD")
    original_type: str | None = None
    deliveries: list[DeliveryView]


class EventFeedView(_View):
    """Events oldest first and the cursor that asks for the ones stored after them (`event_feed_json`)."""

    cursor: int
    events: list[EventView]


class AttemptView(_View):
    """One HTTP attempt and what the subscriber answered (`attempt_json`)."""

    attempt: int
    started_at: Timestamp
    duration_ms: float
    status: int | None
    error: str | None
    response: str | None = Field(description="the start of the subscriber's answer")


class DeliveryDetailView(_DeliveryFields):
    """One delivery with every attempt in order (`delivery_detail_json`): the list where a listed one has the count."""

    attempts: list[AttemptView]


class QuarantineView(_View):
    """A quarantined input; `body` only when one entry is shown (`quarantine_json`)."""

    id: int
    received_at: Timestamp
    source: str
    channel: str | None
    reason: str
    details: list[dict[str, Any]]
    content_type: str | None
    size: int
    body: str | None = None


class SubscriberView(_View):
    """A subscriber's health (`subscriber_json`)."""

    name: str
    url: str
    disabled: bool
    disabled_reason: str | None
    pending: int
    dead: int
    circuit: str = Field(description="closed, open or half-open")
    last_success_at: Timestamp | None


class InstanceView(_View):
    """A live `relay serve` on this store as its last heartbeat recorded it (`instance_json`)."""

    id: str = Field(description="owner id on its leases: host/pid/random")
    host: str
    pid: int
    version: str
    started_at: Timestamp
    heartbeat_at: Timestamp
    poll_leases: int = Field(description="(source, resource) poll leases held")
    deliveries_in_flight: int


class ReplayView(_View):
    """What a replay matched and created, or would create in a dry run (`replay_json`)."""

    events: int
    deliveries: int
    dry_run: bool


class RedriveView(_View):
    """How many dead deliveries were made pending again, or would be in a dry run."""

    redriven: int
    dry_run: bool


class EnabledView(_View):
    """A subscriber re-enabled after a 410."""

    name: str
    disabled: bool
    at: Timestamp


class CommandView(_View):
    """A write-back command (`command_json`): its status document; `body` (the canonical command) when one is shown."""

    command_id: str
    source: str
    command: str = Field(description="order/create, customer/create or customer/update")
    idempotency_key: str
    status: str = Field(description="accepted, running, succeeded or failed")
    attempts: int
    result: dict[str, Any] | None = Field(description="`documentNumber` (the ERP's number), `adopted`, …")
    error: dict[str, Any] | None = Field(description="`code`, `message`, `erpMessages`")
    created_at: Timestamp
    finished_at: Timestamp | None
    next_attempt_at: Timestamp | None = Field(description="only while accepted")
    reference: str | None = Field(description="the external reference the ERP document is found by")
    body: Any = Field(default=None, description="the canonical command")


class QuarantineRetryView(_View):
    """A quarantined input checked again: stored (and removed from quarantine) or still refused, and why
    (`quarantine_retry_json`)."""

    id: int
    stored: bool
    problems: list[str]
    events: list[dict[str, Any]] = Field(description="eventId, status (accepted or duplicate), deliveries")


class TestDeliveryView(_View):
    """What one signed test event (channel relay/test) got from a subscriber (`test_delivery_json`)."""

    __test__ = False  # not a pytest test class, whatever its name says

    subscriber: str
    webhook_id: str
    status: int | None
    ok: bool
    duration_ms: float
    error: str | None
    response: str | None = Field(description="the start of the subscriber's answer")


class CircuitProbeView(TestDeliveryView):
    """A probe sent now and the circuit before and after it (`circuit_probe_json`)."""

    circuit_before: str | None = Field(description="closed, open or half-open")
    circuit_after: str | None = Field(description="closed, open or half-open")


VIEW_MODELS: tuple[type[BaseModel], ...] = (
    ErrorView,
    EventView,
    EventDetailView,
    EventFeedView,
    DeliveryView,
    DeliveryDetailView,
    AttemptView,
    QuarantineView,
    SubscriberView,
    InstanceView,
    ReplayView,
    RedriveView,
    EnabledView,
    CommandView,
    QuarantineRetryView,
    TestDeliveryView,
    CircuitProbeView,
)


def state_json(s: StateRecord) -> dict[str, Any]:
    """`GET /v1/state/{noun}/{key}`: the latest event of a key; `data` is that event's `data` object."""
    payload = orjson.loads(s.payload)
    return {
        "channel": s.channel,
        "entityKey": s.entity_key,
        "version": s.version,
        "eventId": s.event_id,
        "receivedAt": format_ts(s.received_at),
        "deleted": s.deleted,
        "data": payload.get("data") if isinstance(payload, dict) else None,
    }


def test_delivery_json(t: TestDelivery) -> dict[str, Any]:
    """`relay subscribers test`: what one signed test event got from the subscriber."""
    return {
        "subscriber": t.subscriber,
        "webhookId": t.message_id,
        "status": t.status,
        "ok": t.ok,
        "durationMs": round(t.duration_ms, 1),
        "error": t.error,
        "response": t.response_excerpt,
    }


def preview_row_json(row: PreviewRow) -> dict[str, Any]:
    """A dry-run record: verdict, reasons, each canonical field beside its source path and value, the event."""
    return {
        "resource": row.resource,
        "channel": row.channel,
        "key": row.key,
        "status": row.status,
        "problems": row.problems,
        "fields": [
            {"canonical": f.canonical, "value": f.value, "path": f.path, "source": f.source} for f in row.fields
        ],
        "event": row.payload,
    }


def command_json(row: CommandRow, *, with_body: bool = False) -> dict[str, Any]:
    """A write-back command: its status document, and with `with_body` the canonical command it carries."""
    out: dict[str, Any] = {
        "commandId": row.id,
        "source": row.source,
        "command": row.command,
        "idempotencyKey": row.idempotency_key,
        "status": row.status,
        "attempts": row.attempts,
        "result": row.result,
        "error": row.error,
        "createdAt": ts(row.created_at),
        "finishedAt": ts(row.finished_at),
        "nextAttemptAt": ts(row.next_attempt_at) if row.status == "accepted" else None,
        "reference": row.reference,
    }
    if with_body:
        out["body"] = orjson.loads(row.body)
    return out


def circuit_probe_json(p: CircuitProbe) -> dict[str, Any]:
    """`relay subscribers test-circuit`: the probe's answer and the circuit before and after it."""
    return {**test_delivery_json(p.delivery), "circuitBefore": p.circuit_before, "circuitAfter": p.circuit_after}

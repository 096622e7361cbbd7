"""The one JSON view of each operator record, shared by the admin API and `relay … --json`.

Every instant goes out as `relay.events.format_ts`: ISO 8601 in UTC with milliseconds and `Z`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from relay.events import Event, format_ts
from relay.ops import (
    Attempt,
    DeliveryDetail,
    DeliveryRecord,
    EventDetail,
    QuarantineRecord,
    QuarantineRetry,
    ReplayCount,
    SubscriberHealth,
)
from relay.store import CommandRow

__all__ = [
    "attempt_json",
    "delivery_detail_json",
    "delivery_json",
    "event_detail_json",
    "event_json",
    "quarantine_json",
    "quarantine_retry_json",
    "replay_json",
    "subscriber_json",
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


def replay_json(r: ReplayCount) -> dict[str, Any]:
    return {"events": r.events, "deliveries": r.deliveries, "dryRun": r.dry_run}


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

"""Pure rules of write-back commands: keys, body identity, what an ERP answer means, when to try again,
how fast to go, and the documents a caller and a subscriber see. No sockets, no store."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson

from relay.events import format_ts
from relay.store import CommandRow

__all__ = [
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "OUTCOME_CHANNELS",
    "Attempt",
    "body_hash",
    "command_identity",
    "failed_event_payload",
    "idempotency_key_problem",
    "next_retry_at",
    "next_start_at",
    "outcome_event_id",
    "succeeded_event_payload",
]

MAX_IDEMPOTENCY_KEY_LENGTH = 255
# The channel of the event published when a command succeeds (a failure publishes `command/failed`).
OUTCOME_CHANNELS: Mapping[str, tuple[str, str]] = {
    "order/create": ("order/created", "SalesOrderCreated"),
    "customer/create": ("customer/created", "CustomerCreated"),
    "customer/update": ("customer/updated", "CustomerUpdated"),
}


def idempotency_key_problem(value: str | None) -> str | None:
    """Why an `Idempotency-Key` header value cannot be used (None when it can): 1-255 printable ASCII."""
    if value is None or value == "":
        return "the Idempotency-Key header is required"
    if len(value) > MAX_IDEMPOTENCY_KEY_LENGTH:
        return f"the Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
    if not all(" " <= ch <= "~" for ch in value):
        return "the Idempotency-Key must be printable ASCII"
    return None


def body_hash(payload: Any) -> str:
    """What makes two requests "the same body": the JSON value, not its spelling (key order, spaces)."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def command_identity(command: str, payload: Mapping[str, Any]) -> tuple[str, str | None]:
    """(order key, external reference) of a valid command: commands of one customer run in order; the
    reference finds a created document again (`customerReference` of an order, the number of a customer)."""
    customer = str(payload.get("customerNumber") or "")
    if command == "order/create":
        return customer, str(payload["customerReference"])
    if command == "customer/create":
        # A customer created without a number is keyed by its name so that an update sent right after waits.
        return customer or f"name:{payload.get('name', '')}", customer or None
    return customer, customer


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one try at the ERP came to.

    `done`: the document exists (`document_number`); `refused`: the ERP said the data is wrong (no retry);
    `transient`: nothing was created (connection refused, 429) — try again; `unknown`: the request may
    have been carried out (timeout, reset, 5xx after sending) — look the document up before trying again.
    """

    kind: Literal["done", "refused", "transient", "unknown"]
    message: str = ""
    document_number: str | None = None
    erp_messages: Sequence[str] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    retry_after_s: float | None = None


def next_retry_at(
    attempts: int,
    *,
    schedule_s: Sequence[float],
    window_start: datetime,
    max_age_s: float,
    now: datetime,
    retry_after_s: float | None = None,
) -> datetime | None:
    """When to try again after `attempts` failed tries, or None when the retry window is over.

    The n-th retry waits `schedule_s[n-1]` (the last step repeats); a `Retry-After` from the ERP is waited for
    when longer. No retry starts after `window_start + max_age_s`.
    """
    if not schedule_s:
        return None
    wait_s = schedule_s[min(attempts, len(schedule_s)) - 1] if attempts > 0 else 0.0
    if retry_after_s is not None:
        wait_s = max(wait_s, retry_after_s)
    at = now + timedelta(seconds=wait_s)
    return None if at > window_start + timedelta(seconds=max_age_s) else at


def next_start_at(previous_start: datetime | None, rate_per_s: float | None, now: datetime) -> datetime:
    """When the next ERP call may start under `rate_limit` (evenly spaced calls, no bursts): `now` or later."""
    if rate_per_s is None or previous_start is None:
        return now
    return max(now, previous_start + timedelta(seconds=1.0 / rate_per_s))


def outcome_event_id(command_id: str, outcome: str) -> str:
    """One event per command outcome: a repeated finish (after a takeover) is a duplicate, not a second event."""
    return f"{command_id}:{outcome}"


def succeeded_event_payload(
    row: CommandRow, payload: Mapping[str, Any], attempt: Attempt, *, tenant_id: str | None, now: datetime
) -> tuple[str, dict[str, Any]]:
    """(channel, event) announcing a succeeded command, with the ERP's document number."""
    channel, document_type = OUTCOME_CHANNELS[row.command]
    number = attempt.document_number or ""
    data: dict[str, Any] = {"commandId": row.id, "command": row.command, "documentNumber": number}
    if row.command == "order/create":
        data.update(
            orderNumber=number,
            customerNumber=payload.get("customerNumber"),
            customerReference=payload.get("customerReference"),
            adopted=bool(attempt.details.get("adopted")),
        )
    else:
        data["customerNumber"] = number
    event = {
        "eventId": outcome_event_id(row.id, "succeeded"),
        "documentType": document_type,
        "timestamp": format_ts(now),
        "data": data,
    }
    if tenant_id:
        event["tenantId"] = tenant_id
    return channel, event


def failed_event_payload(
    row: CommandRow,
    payload: Mapping[str, Any],
    error: Mapping[str, Any],
    *,
    attempts: int,
    tenant_id: str | None,
    now: datetime,
) -> tuple[str, dict[str, Any]]:
    """(channel, event) announcing a command that failed for good."""
    data: dict[str, Any] = {"commandId": row.id, "command": row.command, "attempts": attempts, "error": dict(error)}
    if isinstance(payload.get("customerReference"), str):
        data["customerReference"] = payload["customerReference"]
    event = {
        # A failure restarted by an operator may fail again: each failure is its own event.
        "eventId": outcome_event_id(row.id, f"failed-{attempts}"),
        "documentType": "CommandFailed",
        "timestamp": format_ts(now),
        "data": data,
    }
    if tenant_id:
        event["tenantId"] = tenant_id
    return "command/failed", event

"""The canonical event record and the pure rules that derive its entity key and version."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "KEY_FIELDS",
    "Event",
    "entity_key_for",
    "format_ts",
    "parse_ts",
    "version_for",
    "version_order",
]

# The business key of each noun (the part of the channel before the slash).
KEY_FIELDS: Mapping[str, tuple[str, ...]] = {
    "customer": ("customerNumber",),
    "order": ("orderNumber",),
    "invoice": ("invoiceNumber",),
    "inventory": ("partNumber", "warehouse"),
    "delivery": ("deliveryNumber",),
    "purchaseorder": ("purchaseOrderNumber",),
    "receipt": ("receiptNumber",),
    "vendor": ("vendorNumber",),
    "journalentry": ("entryNumber",),
}
# Fields of `data` that say when the record changed, in order of preference; else the envelope timestamp.
VERSION_FIELDS: tuple[str, ...] = ("lastModified", "lastTransactionDate", "deletionDate")


@dataclass(frozen=True, slots=True)
class Event:
    """One stored event: the dedup key, routing facts, and the bytes delivered to subscribers."""

    event_id: str
    channel: str
    source: str
    tenant_id: str | None
    entity_key: str | None
    version: str | None
    occurred_at: datetime
    received_at: datetime
    payload: bytes
    original: bytes | None = None
    original_type: str | None = None

    @property
    def version_order(self) -> str:
        return version_order(self.version)


def entity_key_for(channel: str, payload: Mapping[str, Any]) -> str | None:
    """The business key of an event (`partNumber|warehouse` for inventory), or None when absent."""
    fields = KEY_FIELDS.get(channel.partition("/")[0])
    data = payload.get("data")
    if not fields or not isinstance(data, Mapping):
        return None
    parts = []
    for field in fields:
        value = data.get(field)
        if value is None or isinstance(value, dict | list):
            return None
        parts.append(str(value))
    return "|".join(parts)


def version_for(payload: Mapping[str, Any]) -> str | None:
    """What orders two events of one key: `lastModified`/`lastTransactionDate`, else `timestamp`."""
    data = payload.get("data")
    if isinstance(data, Mapping):
        for field in VERSION_FIELDS:
            value = data.get(field)
            if isinstance(value, str) and value:
                return value
    ts = payload.get("timestamp")
    return ts if isinstance(ts, str) and ts else None


_INT_RE = re.compile(r"^\d{1,20}$")


def version_order(version: str | None) -> str:
    """A string that sorts like the version: integers by value, timestamps by instant, else as text.

    ION variation ids are integers ("5" < "10"); polled versions are ISO timestamps, compared in UTC.
    """
    if version is None:
        return ""
    if _INT_RE.match(version):
        return "n" + version.zfill(20)
    try:
        instant = parse_ts(version)
    except ValueError:
        return "s" + version
    return "t" + utc_text(instant)


def parse_ts(value: str) -> datetime:
    """Parse an ISO 8601 timestamp (`Z` or offset; naive is taken as UTC) into an aware UTC datetime."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def utc_text(value: datetime) -> str:
    """Fixed-width ISO 8601 in UTC with microseconds and `Z`: sorts as text like the instants it names."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # isoformat is several times cheaper than strftime, and this runs for every stored timestamp.
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


def format_ts(value: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, millisecond precision (the wire format)."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def utcnow() -> datetime:
    return datetime.now(UTC)

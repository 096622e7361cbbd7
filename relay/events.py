"""The canonical event record and the pure rules that derive its entity key and version."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "KEY_FIELDS",
    "MAX_EVENT_ID_LENGTH",
    "MAX_VERSION_LENGTH",
    "Event",
    "TimestampOutOfRange",
    "entity_key_for",
    "event_id_problem",
    "format_ts",
    "parse_ts",
    "timestamp_problem",
    "utc_seconds_text",
    "version_for",
    "version_order",
    "version_problem",
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

# The event id travels as the `webhook-id` header and into every signature: visible ASCII only, no spaces.
MAX_EVENT_ID_LENGTH = 256
_EVENT_ID_RE = re.compile(r"[\x21-\x7e]+")
MAX_VERSION_LENGTH = 256
# C0 controls, DEL and C1 controls: never part of a version a person or an ERP would write.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class TimestampOutOfRange(ValueError):
    """An ISO 8601 text whose instant in UTC falls before year 1 or after year 9999."""


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
    except ValueError:  # out-of-range instants included: this runs inside the writer and must never raise
        return "s" + version
    return "t" + utc_text(instant)


def parse_ts(value: str) -> datetime:
    """Parse an ISO 8601 timestamp (`Z` or offset; naive is taken as UTC) into an aware UTC datetime.

    Raises:
        TimestampOutOfRange: a valid text whose UTC instant is before 0001-01-01 or after 9999-12-31
            (`0001-01-01T00:30:00+01:00`); a ValueError, so every caller that refuses bad text refuses it too.
        ValueError: not an ISO 8601 date-time.
    """
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise TimestampOutOfRange(f"{value!r} is outside the years 0001-9999 in UTC") from None


def event_id_problem(value: object) -> str | None:
    """Why `value` cannot be an event id, or None: it must be 1-256 printable ASCII characters (0x21-0x7E)."""
    if not isinstance(value, str) or not value:
        return "eventId is required: it is the deduplication key"
    if len(value) > MAX_EVENT_ID_LENGTH:
        return f"eventId is longer than {MAX_EVENT_ID_LENGTH} characters"
    if not _EVENT_ID_RE.fullmatch(value):
        return "eventId may only contain printable ASCII characters without spaces (0x21-0x7E)"
    return None


def version_problem(version: str) -> str | None:
    """Why `version` cannot order events, or None.

    A version is at most 256 characters without control characters; one that reads as an ISO 8601
    timestamp must name an instant within the years 0001-9999 in UTC.
    """
    if len(version) > MAX_VERSION_LENGTH:
        return f"longer than {MAX_VERSION_LENGTH} characters"
    if _CONTROL_RE.search(version):
        return "contains a control character"
    return timestamp_problem(version)


def timestamp_problem(value: str) -> str | None:
    """Why an ISO 8601 text names no representable instant (out of range in UTC), or None.

    Text that is not a timestamp at all is not this function's concern (the schema's `date-time` format is).
    """
    if "0002" <= value[:4] <= "9998":
        # An ISO 8601 text starts with its year; an offset moves it less than a day: no parse needed.
        return None
    try:
        parse_ts(value)
    except TimestampOutOfRange:
        return "is outside the years 0001-9999 in UTC"
    except ValueError:
        return None
    return None


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


def utc_seconds_text(value: datetime) -> str:
    """ISO 8601 in UTC to the second with a `Z` and always four year digits (strftime's `%Y` drops leading
    zeros, so year 999 would not be a valid date-time)."""
    return value.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def utcnow() -> datetime:
    return datetime.now(UTC)

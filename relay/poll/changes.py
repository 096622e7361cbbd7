"""Pure rules of polling: record → canonical data, content hashes, what changed, what vanished."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import orjson

from relay.events import KEY_FIELDS, parse_ts, utc_seconds_text

__all__ = [
    "EXTENSIONS_FIELD",
    "Change",
    "FieldRule",
    "FieldType",
    "RecordMapping",
    "content_hash",
    "deleted_payload",
    "detect_changes",
    "extension_name",
    "poll_event_id",
    "vanished_keys",
]

FieldType = Literal["str", "number", "integer", "date", "date-time", "bool"]
#: The object of `data` that carries customer-added fields (`mapping.fields` names `extensions.NAME`).
EXTENSIONS_FIELD = "extensions"


_EXTENSION_RE = re.compile(r"^extensions\.[A-Za-z_][A-Za-z0-9_-]{0,63}$")


def extension_name(field_name: str) -> str | None:
    """`extensions.leadTimeDays` → `leadTimeDays`; None for a canonical field name."""
    prefix, dot, rest = field_name.partition(".")
    return rest if dot and prefix == EXTENSIONS_FIELD and rest else None


@dataclass(frozen=True, slots=True)
class FieldRule:
    """A canonical field read from a dotted path of the source record, coerced to a type."""

    path: str
    type: FieldType = "str"


def _lookup(record: Mapping[str, Any], path: str) -> Any:
    node: Any = record
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
        if node is None:
            return None
    return node


def _coerce(value: Any, kind: FieldType) -> Any:
    if value is None or value == "":
        return None
    try:
        if kind == "str":
            return value if isinstance(value, str) else str(value)
        if kind == "number":
            return _exact_number(value)
        if kind == "integer":
            whole = int(Decimal(str(value)))  # truncates as before, without a detour through a double
            return whole if -(2**63) <= whole < 2**63 else None
        if kind == "bool":
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "2")
        if kind == "date":
            text = str(value)
            return text[:10] if len(text) >= 10 and text[4] == "-" else None
        return utc_seconds_text(parse_ts(str(value)))  # date-time
    except (TypeError, ValueError, ArithmeticError):
        # One unreadable value (an instant outside 0001-9999, an infinite number) leaves that field out; it
        # never stops the rest of the page.
        return None


def _exact_number(value: Any) -> int | float | None:
    """The number as a JSON number with the same value, or None when a JSON number cannot keep it exactly."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    exact = Decimal(str(value))
    if exact == exact.to_integral_value() and not isinstance(value, float):
        whole = int(exact)
        return whole if -(2**63) <= whole < 2**64 else None
    number = float(exact)
    # A value a double cannot hold (more than ~15 digits, infinite) would be delivered as another amount.
    return number if math.isfinite(number) and Decimal(repr(number)) == exact else None


@dataclass(frozen=True)
class RecordMapping:
    """How one resource's records become canonical `data`: field rules, the key, the update time."""

    fields: Mapping[str, FieldRule]
    updated_path: str | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any], defaults: RecordMapping | None = None) -> RecordMapping:
        """Overrides from config (`{fields: {customerNumber: BPCNUM, onHand: {path: QTY, type: number}}}`).

        Raises:
            ValueError: a malformed field rule, naming the field.
        """
        fields = dict(defaults.fields) if defaults else {}
        for name, rule in (raw.get("fields") or {}).items():
            if name == EXTENSIONS_FIELD or (name.startswith(EXTENSIONS_FIELD + ".") and not _EXTENSION_RE.match(name)):
                raise ValueError(
                    f"mapping field {name!r}: a custom field is named extensions.NAME (letters, digits, _ and -)"
                )
            if isinstance(rule, str):
                fields[name] = FieldRule(rule)
            elif isinstance(rule, Mapping) and isinstance(rule.get("path"), str):
                kind = rule.get("type", "str")
                if kind not in ("str", "number", "integer", "date", "date-time", "bool"):
                    raise ValueError(f"mapping field {name!r}: unknown type {kind!r}")
                fields[name] = FieldRule(rule["path"], kind)
            else:
                raise ValueError(f"mapping field {name!r}: expected a path or {{path, type}}")
        updated = raw.get("updated_path", defaults.updated_path if defaults else None)
        return cls(fields=fields, updated_path=updated)

    def data(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The canonical `data` of one record; `extensions.NAME` fields go into the `extensions` object."""
        out: dict[str, Any] = {}
        for name, rule in self.fields.items():
            value = _coerce(_lookup(record, rule.path), rule.type)
            if value is None:
                continue
            extension = extension_name(name)
            if extension is None:
                out[name] = value
            else:
                out.setdefault(EXTENSIONS_FIELD, {})[extension] = value
        return out

    def updated(self, record: Mapping[str, Any]) -> str | None:
        if not self.updated_path:
            return None
        value = _coerce(_lookup(record, self.updated_path), "date-time")
        return value if isinstance(value, str) else None


def entity_key(channel: str, data: Mapping[str, Any]) -> str | None:
    fields = KEY_FIELDS.get(channel.partition("/")[0])
    if not fields or any(data.get(f) in (None, "") for f in fields):
        return None
    return "|".join(str(data[f]) for f in fields)


def content_hash(data: Mapping[str, Any]) -> str:
    """A stable hash of canonical data (key order does not matter)."""
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def poll_event_id(source: str, resource: str, key: str, digest: str) -> str:
    """Deterministic: the same content of the same record is always the same event (dedup absorbs repeats)."""
    return "poll-" + hashlib.sha256(f"{source}\0{resource}\0{key}\0{digest}".encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Change:
    key: str
    digest: str
    data: dict[str, Any]
    version: str | None


def detect_changes(
    records: Iterable[tuple[str, dict[str, Any], str | None]], previous: Mapping[str, str]
) -> list[Change]:
    """Records whose content differs from what was seen before (new ones included); later wins per key."""
    latest: dict[str, Change] = {}
    for key, data, version in records:
        digest = content_hash(data)
        if previous.get(key) == digest:
            latest.pop(key, None)
            continue
        latest[key] = Change(key, digest, data, version)
    return list(latest.values())


def vanished_keys(known: Iterable[str], listed: Iterable[str]) -> list[str]:
    """Keys seen before that a complete listing no longer contains."""
    present = set(listed)
    return sorted(k for k in known if k not in present)


def deleted_payload(
    channel: str, key: str, *, event_id: str, document_type: str, tenant_id: str | None, now: datetime
) -> dict[str, Any]:
    """The canonical `…/deleted` payload for a vanished key (key fields + deletionDate)."""
    fields: Sequence[str] = KEY_FIELDS.get(channel.partition("/")[0], ())
    parts = key.split("|") if len(fields) > 1 else [key]
    stamp = utc_seconds_text(now)
    data: dict[str, Any] = dict(zip(fields, parts, strict=False))
    data["deletionDate"] = stamp
    payload: dict[str, Any] = {"eventId": event_id, "documentType": document_type, "timestamp": stamp, "data": data}
    if tenant_id:
        payload["tenantId"] = tenant_id
    return payload

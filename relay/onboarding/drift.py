"""Pure rules of schema drift: the observed shape of raw records, and what changed since the last one.

A shape maps each field path (dotted for JSON records, `A/B/@attr` element paths for BODs) to its JSON
types (`number`, `string`, … joined with `|` when a field carries several). Nothing here does I/O: the poll
engine and the IMS endpoint hand records over and commit what `compare_shape` returns
(`relay.onboarding.watch`).

Sparse fields: a field whose value is `null` counts as present (its type is learned from a later non-null
value, silently). A field counts as removed only when it is absent from every record of a *full* page (as
many records as the page size: the source had more to give than fit, so the sample is not one or two
changed records) and it was in the shape before; a one-record incremental page never reports removals.
`integer` and `number` are one type here (`5` and `5.5` in one quantity field are not drift).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from xml.etree.ElementTree import Element

import orjson

from relay.events import format_ts
from relay.onboarding.discover import json_type, walk_fields

__all__ = [
    "DRIFT_CHANNEL",
    "DRIFT_DOCUMENT_TYPE",
    "Retype",
    "Shape",
    "ShapeChange",
    "bod_leaves",
    "compare_shape",
    "drift_event_id",
    "drift_payload",
    "observe_bods",
    "observe_records",
    "sample_of",
]

DRIFT_CHANNEL = "relay/drift"
DRIFT_DOCUMENT_TYPE = "SchemaDrift"
NULL = "null"

#: Field path → its types joined with `|` in sorted order (`number`, `number|string`, `null`).
Shape = dict[str, str]


@dataclass(frozen=True, slots=True)
class Retype:
    """A field whose values changed type: `from_` as known before, `to` as now."""

    field: str
    from_: str
    to: str


@dataclass(frozen=True)
class ShapeChange:
    """The outcome of comparing a page with the stored shape.

    Attributes:
        shape: The shape to keep from now on.
        added: Fields not in the previous shape.
        removed: Fields of the previous shape absent from every record of a full page.
        retyped: Fields whose type changed.
        baseline: There was no previous shape: `shape` is the first one seen, not drift.
    """

    shape: Shape
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    retyped: list[Retype] = field(default_factory=list)
    baseline: bool = False

    @property
    def drift(self) -> bool:
        """A change subscribers hear of (a baseline, or a type learned from a first non-null value, is not)."""
        return bool(self.added or self.removed or self.retyped)


def _kind(value: Any) -> str:
    kind = json_type(value)
    return "number" if kind == "integer" else kind


def _join(kinds: Iterable[str]) -> str:
    named = sorted(set(kinds) - {NULL})
    return "|".join(named) if named else NULL


def observe_records(records: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """Every field path in `records` with the set of JSON types its values had (`null` included)."""
    seen: dict[str, set[str]] = {}
    for record in records:
        for path, value in walk_fields(record):
            seen.setdefault(path, set()).add(_kind(value))
    return seen


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def bod_leaves(element: Element, prefix: str = "") -> Iterable[tuple[str, str]]:
    """Every attribute and text-bearing element under `element` as (element path, text), in document order.

    Paths are relative to `element` in the mappings' syntax (`SalesOrderHeader/DocumentID/ID`,
    `…/ID/@variationID`); namespaces are ignored, as the mappings ignore them.
    """
    for child in element:  # the BOD parser keeps no comments or processing instructions
        path = f"{prefix}{_local(child.tag)}"
        for name, value in child.attrib.items():
            yield f"{path}/@{_local(name)}", value
        text = (child.text or "").strip()
        if len(child):
            yield from bod_leaves(child, path + "/")
        elif text or not child.attrib:
            yield path, text


def observe_bods(noun_elements: Iterable[Element]) -> dict[str, set[str]]:
    """The element paths of BOD noun elements; every value of XML is text, so each path is a `string`."""
    seen: dict[str, set[str]] = {}
    for element in noun_elements:
        for path, _ in bod_leaves(element):
            seen.setdefault(path, set()).add("string")
    return seen


def compare_shape(previous: Mapping[str, str] | None, observed: Mapping[str, set[str]], *, full: bool) -> ShapeChange:
    """Compare one page's observed fields (`observe_records` / `observe_bods`) with the stored shape.

    Args:
        previous: The shape kept so far, or None before the first page of this resource.
        observed: Field path → types seen in this page (an empty page changes nothing).
        full: The page held as many records as a page can: only then do absent fields count as removed.

    Returns:
        The new shape and what was added, removed and retyped. A field whose known type was only `null`
        takes its first real type without drift; a type seen next to a known one widens it (`number` →
        `number|string`) and one that replaces it entirely retypes it (`number` → `string`).
    """
    if previous is None:
        return ShapeChange({path: _join(kinds) for path, kinds in observed.items()}, baseline=bool(observed))
    if not observed:
        return ShapeChange(dict(previous))
    shape = dict(previous)
    added = [path for path in observed if path not in previous]
    retyped: list[Retype] = []
    for path, kinds in observed.items():
        now = set(kinds) - {NULL}
        if path not in previous:
            shape[path] = _join(kinds)
            continue
        before = set(previous[path].split("|")) - {NULL}
        if not now or now <= before:
            continue
        to = _join(now if not before or now.isdisjoint(before) else before | now)
        shape[path] = to
        if before:
            retyped.append(Retype(path, previous[path], to))
    removed = [path for path in previous if path not in observed] if full else []
    for path in removed:
        del shape[path]
    return ShapeChange(shape, sorted(added), sorted(removed), sorted(retyped, key=lambda r: r.field))


def drift_event_id(source: str, resource: str, shape: Mapping[str, str]) -> str:
    """Deterministic: the same new shape of one resource is always the same event (a repeat is a duplicate)."""
    canonical = orjson.dumps(dict(shape), option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(f"{source}\0{resource}\0".encode() + canonical).hexdigest()[:40]
    return "drift-" + digest


def drift_payload(
    source: str,
    resource: str,
    change: ShapeChange,
    *,
    detected_at: datetime,
    sample_key: str | None,
    tenant_id: str | None = None,
) -> dict[str, Any]:
    """The `relay/drift` event (SchemaDrift) of one change: what was added, removed and retyped."""
    data: dict[str, Any] = {
        "source": source,
        "resource": resource,
        "added": change.added,
        "removed": change.removed,
        "retyped": [{"field": r.field, "from": r.from_, "to": r.to} for r in change.retyped],
        "detectedAt": format_ts(detected_at),
    }
    if sample_key is not None:
        data["sampleKey"] = sample_key
    payload: dict[str, Any] = {
        "eventId": drift_event_id(source, resource, change.shape),
        "documentType": DRIFT_DOCUMENT_TYPE,
        "timestamp": format_ts(detected_at),
        "data": data,
    }
    if tenant_id:
        payload["tenantId"] = tenant_id
    return payload


def sample_of(records: Sequence[Mapping[str, Any]], fields: Iterable[str]) -> int | None:
    """The index of the first record that carries one of `fields` (the record a drift event names)."""
    wanted = set(fields)
    for i, record in enumerate(records):
        if any(path in wanted for path, _ in walk_fields(record)):
            return i
    return None

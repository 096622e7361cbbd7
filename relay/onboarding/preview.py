"""Pure rules of `relay poll --dry-run`: one source record → the event subscribers would receive, side by side
with the source values it came from, and whether it validates."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from relay.poll.base import ResourceSpec
from relay.poll.changes import Change, content_hash, entity_key, extension_name
from relay.poll.engine import event_payload
from relay.spec import SpecRegistry

__all__ = ["FieldPair", "PreviewRow", "missing_rows", "parse_keys", "preview_row"]


@dataclass(frozen=True, slots=True)
class FieldPair:
    """One canonical field: its value in the event, the source path it is read from and the raw source value."""

    canonical: str
    value: Any
    path: str
    source: Any


@dataclass(frozen=True)
class PreviewRow:
    """One record of a dry run: `ok`, `invalid` (with the schema's reasons), `no key`, or `not found`."""

    resource: str
    channel: str
    key: str | None
    status: Literal["ok", "invalid", "no key", "not found"]
    problems: list[str] = field(default_factory=list)
    fields: list[FieldPair] = field(default_factory=list)
    payload: dict[str, Any] | None = None


def parse_keys(text: str) -> list[str]:
    """Entity keys from a keys file: one a line (`C00042`, `BOX-S-KRAFT-0001|ALD01`); blanks and `#` lines are
    skipped, repeats kept once, order kept.

    Raises:
        ValueError: the file names no key.
    """
    keys = list(dict.fromkeys(s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")))
    if not keys:
        raise ValueError("the keys file names no key (one entity key a line, e.g. BOX-S-KRAFT-0001|ALD01)")
    return keys


def _source_value(record: Mapping[str, Any], path: str) -> Any:
    node: Any = record
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def preview_row(
    source: str, resource: ResourceSpec, record: Mapping[str, Any], specs: SpecRegistry, now: datetime
) -> PreviewRow:
    """What one source record becomes: the payload, each mapped field beside its source value, the verdict."""
    data = resource.mapping.data(record)
    pairs = []
    for name, rule in resource.mapping.fields.items():
        ext = extension_name(name)
        value = (data.get("extensions") or {}).get(ext) if ext else data.get(name)
        pairs.append(FieldPair(name, value, rule.path, _source_value(record, rule.path)))
    key = entity_key(resource.channel, data)
    if key is None:
        return PreviewRow(resource.name, resource.channel, None, "no key", ["the record has no entity key"], pairs)
    change = Change(key, content_hash(data), data, resource.mapping.updated(record))
    payload = event_payload(source, resource, change, now)
    issues = specs.validate(resource.channel, payload)
    problems = [f"{i.path}: {i.message}" for i in issues]
    return PreviewRow(resource.name, resource.channel, key, "invalid" if issues else "ok", problems, pairs, payload)


def missing_rows(wanted: Sequence[str], found: Iterable[str], resources: Sequence[ResourceSpec]) -> list[PreviewRow]:
    """A `not found` row for each wanted key no resource returned."""
    seen = set(found)
    channel = ", ".join(dict.fromkeys(r.channel for r in resources))
    names = ", ".join(r.name for r in resources)
    return [
        PreviewRow(names, channel, key, "not found", ["no record with this key in the source"])
        for key in wanted
        if key not in seen
    ]

"""Pure rules of `relay discover`: sampled records → field profiles, a proposed mapping, custom fields, a draft.

Nothing here does I/O: `relay.ops.discover_source` samples the records and hands them over.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from relay.poll.changes import EXTENSIONS_FIELD, FieldType, RecordMapping, extension_name

__all__ = [
    "DEFAULT_MASK",
    "CustomField",
    "FieldProfile",
    "Proposal",
    "ResourceDraft",
    "canonical_fields",
    "custom_fields",
    "draft_json",
    "json_type",
    "mask_example",
    "profile_fields",
    "propose",
    "render_draft",
    "walk_fields",
]

#: Field names whose example values are personal data or secrets (e-mail, phone, names, addresses, credentials).
DEFAULT_MASK = r"(?i)(mail|phone|phon|tel|fax|name|nam$|contact|addr|street|password|secret|token|iban|tax)"
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE_RE = re.compile(r"^\+?[\d\s().-]{7,}$")
_DATE_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_EXAMPLE_CHARS = 40
SIMILARITY_MIN = 0.6

JsonType = Literal["string", "integer", "number", "boolean", "object", "array", "null"]


def json_type(value: Any) -> JsonType:
    """The JSON type of a decoded value (`integer` for whole numbers that are not booleans)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    return "array"


def mask_example(name: str, value: Any, mask: re.Pattern[str]) -> str:
    """An example value as shown in a draft: masked when the field name or the value looks personal or secret.

    Masked values keep their first character and length (`j•••••••`), enough to recognise the field's kind.
    """
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    looks_phone = isinstance(value, str) and _PHONE_RE.match(text) and not _DATE_RE.match(text[:10])
    looks_personal = bool(_EMAIL_RE.match(text) or looks_phone)
    if mask.search(name) or looks_personal:
        return text[:1] + "•" * min(len(text) - 1, 8) if text else ""
    return text if len(text) <= MAX_EXAMPLE_CHARS else text[: MAX_EXAMPLE_CHARS - 1] + "…"


@dataclass
class FieldProfile:
    """One source field as seen in a sample: its JSON types, how often it had a value, two examples."""

    path: str
    types: list[JsonType] = field(default_factory=list)
    filled: int = 0
    sampled: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def fill_rate(self) -> float:
        """The share of sampled records with a non-empty value (0.0-1.0)."""
        return self.filled / self.sampled if self.sampled else 0.0

    @property
    def suggested_type(self) -> FieldType:
        """The mapping type a field of these values needs (`str` unless every value says otherwise)."""
        kinds = set(self.types) - {"null"}
        if kinds == {"integer"}:
            return "integer"
        if kinds and kinds <= {"integer", "number"}:
            return "number"
        if kinds == {"boolean"}:
            return "bool"
        if kinds == {"string"} and self.examples and not any("•" in e for e in self.examples):
            if all(_DATE_TIME_RE.match(e) for e in self.examples):
                return "date-time"
            if all(_DATE_RE.match(e) for e in self.examples):
                return "date"
        return "str"


def walk_fields(record: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Every leaf of a record as (dotted path, value): nested objects by name, lists of objects by their first
    element (`lines.0.qty`); an empty object or list, and a scalar list, is one leaf."""
    for name, value in record.items():
        path = f"{prefix}{name}"
        if isinstance(value, Mapping) and value:
            yield from walk_fields(value, path + ".")
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            yield from walk_fields(value[0], path + ".0.")
        else:
            yield path, value


def profile_fields(records: Sequence[Mapping[str, Any]], mask: re.Pattern[str]) -> list[FieldProfile]:
    """Every field path seen in `records` (nested objects as dotted paths, lists of objects by their first
    element), in first-seen order, with types, fill counts and up to two distinct masked examples."""
    profiles: dict[str, FieldProfile] = {}
    for record in records:
        for path, value in walk_fields(record):
            profile = profiles.setdefault(path, FieldProfile(path))
            kind = json_type(value)
            if kind not in profile.types:
                profile.types.append(kind)
            if value is None or value == "" or value == []:
                continue
            profile.filled += 1
            example = mask_example(path, value, mask)
            if len(profile.examples) < 2 and example not in profile.examples:
                profile.examples.append(example)
    for profile in profiles.values():
        profile.sampled = len(records)
    return list(profiles.values())


def canonical_fields(payload_schema: Mapping[str, Any]) -> dict[str, FieldType]:
    """The canonical `data` fields of a channel's message and the mapping type each needs."""
    data = (payload_schema.get("properties") or {}).get("data") or {}
    out: dict[str, FieldType] = {}
    for name, schema in (data.get("properties") or {}).items():
        if name == EXTENSIONS_FIELD or not isinstance(schema, Mapping):
            continue
        kind = schema.get("type")
        fmt = schema.get("format")
        out[name] = (
            "number"
            if kind == "number"
            else "integer"
            if kind == "integer"
            else "bool"
            if kind == "boolean"
            else "date-time"
            if fmt == "date-time"
            else "date"
            if fmt == "date"
            else "str"
        )
    return out


@dataclass(frozen=True)
class Proposal:
    """A canonical field and where it would come from: `default` mapping, name `similar`ity, or `none`."""

    canonical: str
    path: str | None
    how: Literal["default", "similar", "none"]
    type: FieldType | Literal["count"]  # `count`: a BOD mapping's number of elements (lineCount)


@dataclass(frozen=True)
class CustomField:
    """A source field the mapping does not use, with the `extensions.NAME` entry suggested for it."""

    path: str
    suggestion: str
    type: FieldType
    fill_rate: float


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _used_paths(mapping: RecordMapping) -> set[str]:
    paths = {rule.path for rule in mapping.fields.values()}
    if mapping.updated_path:
        paths.add(mapping.updated_path)
    return paths | {p.split(".")[0] for p in paths}


def propose(
    canonical: Mapping[str, FieldType], mapping: RecordMapping, profiles: Sequence[FieldProfile]
) -> list[Proposal]:
    """One proposal per canonical field: the default mapping's path, else the most similar unused source field
    name (at least `SIMILARITY_MIN` alike), else none."""
    used = _used_paths(mapping)
    free = [p.path for p in profiles if p.path not in used and not p.path.startswith(("$", "_"))]
    proposals = []
    for name, kind in canonical.items():
        rule = mapping.fields.get(name)
        if rule is not None:
            proposals.append(Proposal(name, rule.path, "default", rule.type))
            continue
        scored = sorted(
            ((difflib.SequenceMatcher(None, _norm(name), _norm(path)).ratio(), path) for path in free),
            key=lambda s: (-s[0], s[1]),
        )
        if scored and scored[0][0] >= SIMILARITY_MIN:
            free.remove(scored[0][1])
            proposals.append(Proposal(name, scored[0][1], "similar", kind))
        else:
            proposals.append(Proposal(name, None, "none", kind))
    return proposals


def _extension_suggestion(path: str) -> str:
    words = [w for w in re.split(r"[^A-Za-z0-9]+", path) if w]
    name = words[0].lower() + "".join(w[:1].upper() + w[1:].lower() for w in words[1:]) if words else "field"
    return f"{EXTENSIONS_FIELD}.{name if name[0].isalpha() else 'f' + name}"


def custom_fields(
    profiles: Sequence[FieldProfile], mapping: RecordMapping, proposals: Sequence[Proposal]
) -> list[CustomField]:
    """Source fields neither the mapping (defaults and overrides) nor a proposal uses: the customer's own
    fields, each with a suggested `extensions.NAME` entry. API metadata (`$uuid`, `_id`, `…RowID`) and the
    relay's computed fields (`_key`, `_updated`) are left out."""
    used = _used_paths(mapping) | {p.path for p in proposals if p.path}
    already = {extension_name(n) for n in mapping.fields} - {None}
    out = []
    for profile in profiles:
        if profile.path in used or profile.path.startswith(("$", "_")) or profile.path.lower().endswith("rowid"):
            continue
        suggestion = _extension_suggestion(profile.path)
        if extension_name(suggestion) in already:
            continue
        out.append(CustomField(profile.path, suggestion, profile.suggested_type, profile.fill_rate))
    return out


@dataclass(frozen=True)
class ResourceDraft:
    """The discovery of one resource: its config key (`class: ITMMVT`), channel, fields and proposals."""

    key: str
    name: str
    channel: str
    sampled: int
    fields: list[FieldProfile]
    proposals: list[Proposal]
    custom: list[CustomField]


def _plain(path: str) -> str:
    """A field path as written in the draft: bare when YAML reads it back unchanged, else JSON-quoted."""
    return path if re.fullmatch(r"[A-Za-z0-9_$][A-Za-z0-9_.$/@-]*", path) else orjson.dumps(path).decode()


def _rule(path: str, kind: FieldType | Literal["count"]) -> str:
    quoted = orjson.dumps(path).decode()
    return quoted if kind == "str" else f"{{path: {quoted}, type: {kind}}}"


def render_draft(source: str, drafts: Sequence[ResourceDraft]) -> str:
    """The mapping draft as YAML with comments: per resource, the fields seen and a `mapping:` to paste."""
    if drafts and all(d.key == "document" for d in drafts):  # an ion-ims source: BOD element paths
        lines = [
            f"# relay discover {source}: a mapping draft from the element paths of stored and quarantined BODs.",
            "# Paste a document's `fields:` under `mappings: {DOCUMENT: {fields: …}}` of the source, only the",
            "# entries that differ from the default mapping; uncomment the custom fields subscribers should receive.",
            "documents:",
        ]
    else:
        lines = [
            f"# relay discover {source}: a mapping draft from sampled records.",
            "# Paste each resource's `mapping:` under that resource in the source's configuration, after checking",
            "# the proposals marked `check`; uncomment the custom fields subscribers should receive.",
            "resources:",
        ]
    for draft in drafts:
        lines += [
            f"  - {draft.key}: {orjson.dumps(draft.name).decode()}",
            f"    channel: {draft.channel}",
            f"    # {draft.sampled} records sampled; every field seen (type, fill rate, examples):",
        ]
        for p in draft.fields:
            examples = ", ".join(orjson.dumps(e).decode() for e in p.examples)
            types = "|".join(p.types)
            lines.append(f"    #   {_plain(p.path)}: {types}, {p.fill_rate:.0%} filled, e.g. {examples or '(none)'}")
        lines += ["    mapping:", "      fields:"]
        for proposal in draft.proposals:
            if proposal.path is None:
                lines.append(f"        # {proposal.canonical}: ?   # no source field found")
            elif proposal.how == "default":
                lines.append(f"        {proposal.canonical}: {_rule(proposal.path, proposal.type)}   # default")
            else:
                lines.append(
                    f"        {proposal.canonical}: {_rule(proposal.path, proposal.type)}   # by name similarity: check"
                )
        for custom in draft.custom:
            lines.append(
                f"        # {custom.suggestion}: {_rule(custom.path, custom.type)}"
                f"   # custom field ({custom.fill_rate:.0%} filled)"
            )
    return "\n".join(lines) + "\n"


def draft_json(source: str, drafts: Sequence[ResourceDraft]) -> dict[str, Any]:
    """The draft as one JSON object (`--json`)."""
    return {
        "source": source,
        "resources": [
            {
                d.key: d.name,
                "channel": d.channel,
                "sampled": d.sampled,
                "fields": [
                    {"path": p.path, "types": p.types, "fillRate": round(p.fill_rate, 4), "examples": p.examples}
                    for p in d.fields
                ],
                "proposals": [
                    {"canonical": p.canonical, "path": p.path, "how": p.how, "type": p.type} for p in d.proposals
                ],
                "customFields": [
                    {"path": c.path, "suggestion": c.suggestion, "type": c.type, "fillRate": round(c.fill_rate, 4)}
                    for c in d.custom
                ],
            }
            for d in drafts
        ],
    }

"""Pure rules of `relay discover` for an ion-ims source: BOD element paths → the same mapping draft as the
polled sources (fields, fill rates, masked examples, proposals from the BOD default mapping, custom fields).

`relay.ops.discover_ion` reads the BODs (stored originals and quarantined bodies); nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from xml.etree.ElementTree import Element

from relay.ingest.bod import NounMapping
from relay.onboarding.discover import (
    Proposal,
    ResourceDraft,
    canonical_fields,
    custom_fields,
    profile_fields,
    propose,
)
from relay.onboarding.drift import bod_leaves
from relay.poll.changes import EXTENSIONS_FIELD, RecordMapping

__all__ = ["bod_record", "group_by_document", "guess_value", "ion_draft", "mapped_paths"]

_INTEGER_RE = re.compile(r"^-?(0|[1-9]\d{0,15})$")
_DECIMAL_RE = re.compile(r"^-?\d+\.\d+$")
_PREDICATE_RE = re.compile(r"\[[^\]]*\]")


def guess_value(text: str) -> Any:
    """The JSON value an element's text most likely stands for, so the draft can guess its type.

    Whole numbers without a leading zero are integers (`0042` stays text: an item or customer number), decimals
    are numbers, the rest is text; empty text is None (an element present without a value).
    """
    if text == "":
        return None
    if _INTEGER_RE.match(text):
        return int(text)
    if _DECIMAL_RE.match(text):
        return float(text)
    return text


def bod_record(noun: Element) -> dict[str, Any]:
    """One noun element as a flat record: element path → guessed value of its first occurrence."""
    record: dict[str, Any] = {}
    for path, text in bod_leaves(noun):
        record.setdefault(path, guess_value(text))
    return record


def mapped_paths(mapping: NounMapping) -> set[str]:
    """The element paths (relative to the noun, predicates dropped) that a mapping reads."""
    doc_id = _PREDICATE_RE.sub("", mapping.document_id_path)  # relative to the noun element
    used = {doc_id, doc_id + "/@variationID"}
    base = f"{mapping.entity_path}/" if mapping.entity_path else ""
    for spec in mapping.fields.values():
        for alternative in spec.path.split("|"):
            step = _PREDICATE_RE.sub("", alternative.strip())
            if step.startswith("bod:"):
                continue
            used.add(step.removeprefix("noun:") if step.startswith("noun:") else base + step)
    return used


def ion_draft(
    document_name: str,
    mapping: NounMapping | None,
    payload_schema: Mapping[str, Any] | None,
    records: Sequence[Mapping[str, Any]],
    mask: re.Pattern[str],
) -> ResourceDraft:
    """The draft of one document (`Sync.SalesOrder`) from its noun elements as `bod_record`s.

    Canonical fields take the mapping's path (`default`), else the most alike unused element path
    (`similar`), else none; element paths the mapping does not read are custom-field suggestions. A document
    without a mapping lists its fields only.
    """
    profiles = profile_fields(records, mask)
    if mapping is None or payload_schema is None:
        return ResourceDraft("document", document_name, "(no mapping)", len(records), profiles, [], [])
    used = mapped_paths(mapping)
    canonical = canonical_fields(payload_schema)
    proposals: list[Proposal] = []
    free = [p for p in profiles if p.path not in used]
    others = {name: kind for name, kind in canonical.items() if name not in mapping.fields}
    by_similarity = {p.canonical: p for p in propose(others, _NO_MAPPING, free)}
    for name in canonical:
        spec = mapping.fields.get(name)
        proposals.append(Proposal(name, spec.path, "default", spec.type) if spec else by_similarity[name])
    taken = {c for c in mapping.fields if c.startswith(EXTENSIONS_FIELD + ".")}
    custom = []
    for found in custom_fields(free, _NO_MAPPING, proposals):
        suggestion = _suggestion(found.path)
        if suggestion not in taken:  # one suggestion per name: the first path that would take it
            taken.add(suggestion)
            custom.append(dataclasses.replace(found, suggestion=suggestion))
    return ResourceDraft("document", document_name, mapping.channel, len(records), profiles, proposals, custom)


_NO_MAPPING = RecordMapping.parse({})


def _suggestion(path: str) -> str:
    """`extensions.leadTimeDays` for `SalesOrderHeader/UserArea/LeadTimeDays`: the last element, lowerCamel;
    an `ID` or an attribute is named with its parent (`…/Location/ID` → `locationID`, `…/Quantity/@unitCode` →
    `quantityUnitCode`)."""
    steps = [s.lstrip("@") for s in path.split("/") if s]
    last = path.rsplit("/", 1)[-1]
    words = steps[-2:] if (last.startswith("@") or len(last) <= 2) and len(steps) > 1 else steps[-1:]
    if len(words) == 2 and words[0].endswith(words[1]):  # `ItemID/ID` is the item ID: `itemID`
        words = words[:1]
    if words[0].isupper():
        words[0] = words[0].lower()
    name = re.sub(r"[^A-Za-z0-9_-]", "", "".join(w[:1].upper() + w[1:] for w in words)) or "field"
    name = name[:1].lower() + name[1:]
    return f"{EXTENSIONS_FIELD}.{name if name[0].isalpha() else 'f' + name}"[:74]


def group_by_document(bods: Iterable[tuple[str, Sequence[Element]]]) -> dict[str, list[dict[str, Any]]]:
    """(document name, noun elements) of each BOD → the flat records of every noun element, per document."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, nouns in bods:
        out.setdefault(name, []).extend(bod_record(noun) for noun in nouns)
    return out

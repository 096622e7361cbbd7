"""What every source shares: validate a canonical payload, build the Event, route it, commit it.

Pure parts (`check_payload`, `build_event`) are unit-tested without I/O; `Ingestor`
is the thin edge that calls the store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from relay.events import (
    KEY_FIELDS,
    VERSION_FIELDS,
    Event,
    entity_key_for,
    event_id_problem,
    parse_ts,
    version_for,
    version_problem,
)
from relay.routing import Router
from relay.spec import SpecRegistry, ValidationIssue, _json_path
from relay.store import IngestOutcome, NewEvent, QuarantineEntry, Store

__all__ = [
    "Candidate",
    "Ingestor",
    "PayloadProblem",
    "build_event",
    "check_candidate",
    "check_payload",
    "inexact_numbers",
]

MAX_ENTITY_KEY_LENGTH = 1024
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# orjson keeps integers in this range exact and turns any other into a float.
_EXACT_INT_MIN, _EXACT_INT_MAX = -(2**63), 2**64 - 1
# Cheap pre-filter: a literal that a double might not hold exactly has 16+ digits or an exponent. The body is
# mapped to "0" for digits and dots, "e" for exponents, " " for the rest, then searched (faster than a regex);
# strings that match (long digit ids) only cost the exact re-parse, a body without a match holds no such number.
_DIGIT_MAP = bytes(ord("0") if b in b"0123456789." else ord("e") if b in b"eE" else ord(" ") for b in range(256))
_LONG_RUN = b"0" * 16


@dataclass(frozen=True, slots=True)
class PayloadProblem:
    """Why a payload was refused: an HTTP-ish status, a short code, and the JSON-path details."""

    status: int
    error: str
    details: list[ValidationIssue]
    channel: str | None = None

    def details_json(self) -> list[dict[str, Any]]:
        return [{"path": d.path, "message": d.message} for d in self.details]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A validated canonical payload on its channel, with the original document if the source sent one."""

    channel: str
    payload: Mapping[str, Any]
    original: bytes | None = None
    original_type: str | None = None
    version: str | None = None
    entity_key: str | None = None


def check_payload(
    specs: SpecRegistry,
    payload: Any,
    *,
    path_channel: str | None = None,
    allowed_channels: Sequence[str] | None = None,
    raw: bytes | None = None,
) -> str | PayloadProblem:
    """Find the payload's channel and validate it; return the channel or the problem.

    The channel comes from the path when given (the documentType must then agree), else from
    `documentType`. Unknown channels are 404; every schema failure, every derived value that
    `check_candidate` refuses and, when `raw` (the body the payload was read from) is given, every number
    that would not be kept exactly (`inexact_numbers`) is 422 with JSON paths.
    """
    if path_channel is not None and not specs.has_channel(path_channel):
        return PayloadProblem(404, "unknown_channel", [ValidationIssue("$", f"no channel {path_channel!r}")])
    if not isinstance(payload, dict):
        kind = type(payload).__name__ if payload is not None else "null"
        return PayloadProblem(422, "invalid_payload", [ValidationIssue("$", f"expected an object, got {kind}")])
    doc_type = payload.get("documentType")
    channel = path_channel
    if channel is None:
        if not isinstance(doc_type, str) or not doc_type:
            return PayloadProblem(
                422,
                "invalid_payload",
                [ValidationIssue("$.documentType", "documentType is required to find the channel")],
            )
        channel = specs.channel_for_document_type(doc_type)
        if channel is None:
            return PayloadProblem(
                422, "invalid_payload", [ValidationIssue("$.documentType", f"unknown documentType {doc_type!r}")]
            )
    elif isinstance(doc_type, str) and (found := specs.channel_for_document_type(doc_type)) not in (None, channel):
        return PayloadProblem(
            422,
            "invalid_payload",
            [ValidationIssue("$.documentType", f"documentType {doc_type!r} belongs to channel {found!r}")],
            channel,
        )
    if allowed_channels is not None and channel not in allowed_channels:
        return PayloadProblem(
            404, "unknown_channel", [ValidationIssue("$", f"channel {channel!r} is not accepted from this source")]
        )
    issues = [*specs.validate(channel, payload), *_derived_issues(channel, payload)]
    if raw is not None:
        issues.extend(inexact_numbers(raw))
    if issues:
        return PayloadProblem(422, "invalid_payload", list(dict.fromkeys(issues)), channel)
    return channel


def check_candidate(candidate: Candidate, *, version_path: str = "version") -> list[ValidationIssue]:
    """Check what the store derives from a candidate, so that a bad value is refused before it joins a batch.

    The event id (1-256 printable ASCII characters, the `webhook-id` header), the envelope `timestamp` and the
    version fields of `data` (instants within the years 0001-9999 in UTC, no control characters), the
    candidate's own version (named `version_path` in the issue) and the entity key (at most 1024 characters,
    no control characters).

    Returns:
        The issues, with JSON paths; empty when every derived value is sound.
    """
    return _derived_issues(
        candidate.channel, candidate.payload, candidate.version, candidate.entity_key, version_path=version_path
    )


_STAMPED_FIELDS = tuple((f, f"$.data.{f}") for f in VERSION_FIELDS)


def _derived_issues(
    channel: str,
    payload: Mapping[str, Any],
    version: str | None = None,
    entity_key: str | None = None,
    *,
    version_path: str = "version",
) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    if problem := event_id_problem(payload.get("eventId")):
        issues.append(ValidationIssue("$.eventId", problem))
    timestamp = payload.get("timestamp")
    if isinstance(timestamp, str) and (problem := version_problem(timestamp)):
        issues.append(ValidationIssue("$.timestamp", f"timestamp {problem}"))
    data = payload.get("data")
    if isinstance(data, dict):  # payloads are parsed JSON; an ABC check costs more than the rest here
        for name, path in _STAMPED_FIELDS:
            value = data.get(name)
            if isinstance(value, str) and (problem := version_problem(value)):
                issues.append(ValidationIssue(path, f"{name} {problem}"))
    if version is not None and (problem := version_problem(version)):
        issues.append(ValidationIssue(version_path, f"{version_path} {problem}"))
    key = entity_key or entity_key_for(channel, payload)
    if key is not None and (len(key) > MAX_ENTITY_KEY_LENGTH or _CONTROL_RE.search(key)):
        fields = KEY_FIELDS.get(channel.partition("/")[0], ())
        where = " + ".join(f"$.data.{f}" for f in fields) or "$.data"
        issues.append(
            ValidationIssue(
                where, f"the entity key must be at most {MAX_ENTITY_KEY_LENGTH} characters without control characters"
            )
        )
    return issues


class _Inexact:
    """A number literal that would not survive the round trip through orjson (kept as its text)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _exact_int(text: str) -> Any:
    try:
        value = int(text)
    except ValueError:  # more digits than Python converts (4300): certainly not exact
        return _Inexact(text)
    return value if _EXACT_INT_MIN <= value <= _EXACT_INT_MAX else _Inexact(text)


def _exact_float(text: str) -> Any:
    value = float(text)
    # orjson writes the shortest text that reads back as the same double, as repr does.
    return value if Decimal(repr(value)) == Decimal(text) else _Inexact(text)


def _inexact_paths(node: Any, parts: list[str | int]) -> Iterator[tuple[str, str]]:
    if isinstance(node, _Inexact):
        yield _json_path(parts), node.text
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _inexact_paths(value, [*parts, key])
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _inexact_paths(value, [*parts, index])


def inexact_numbers(body: bytes) -> list[ValidationIssue]:
    """Numbers in a JSON body that would be stored and delivered with another value than the one sent.

    orjson reads integers outside -2^63..2^64-1 and decimals with more digits than a double holds as the
    nearest double (10^30 would be delivered as `1e+30`). A business value is never changed: such numbers
    are refused, each with its JSON path. `body` must already be valid JSON.
    """
    mapped = body.translate(_DIGIT_MAP)
    if _LONG_RUN not in mapped and b"0e" not in mapped:
        return []
    try:
        tree = json.loads(body, parse_int=_exact_int, parse_float=_exact_float)
    except (ValueError, RecursionError):
        return [ValidationIssue("$", "the numbers of this body cannot be checked for exactness")]
    return [
        ValidationIssue(path, f"{text[:40]} cannot be kept exactly: send it as a string or with at most 15 digits")
        for path, text in _inexact_paths(tree, [])
    ]


def build_event(
    candidate: Candidate,
    *,
    source: str,
    received_at: datetime,
    payload_bytes: bytes | None = None,
) -> Event:
    """The stored Event for a validated candidate (entity key and version by the channel's rules)."""
    payload = candidate.payload
    timestamp = payload.get("timestamp")
    try:
        occurred_at = parse_ts(timestamp) if isinstance(timestamp, str) else received_at
    except ValueError:
        occurred_at = received_at
    tenant = payload.get("tenantId")
    return Event(
        event_id=str(payload["eventId"]),
        channel=candidate.channel,
        source=source,
        tenant_id=tenant if isinstance(tenant, str) else None,
        entity_key=candidate.entity_key or entity_key_for(candidate.channel, payload),
        version=candidate.version or version_for(payload),
        occurred_at=occurred_at,
        received_at=received_at,
        payload=payload_bytes if payload_bytes is not None else orjson.dumps(payload),
        original=candidate.original,
        original_type=candidate.original_type,
    )


class Ingestor:
    """Commits validated candidates with their deliveries, and keeps refused input in quarantine."""

    def __init__(self, store: Store, router: Router) -> None:
        self.store = store
        self.router = router

    async def commit(
        self, source: str, candidates: Sequence[Candidate], *, received_at: datetime
    ) -> list[IngestOutcome]:
        """Store the candidates (one transaction) and return one outcome each.

        Raises:
            StoreUnavailable: nothing was committed.
        """
        items = [
            NewEvent(
                build_event(c, source=source, received_at=received_at),
                self.router.plan(c.channel, c.payload),
            )
            for c in candidates
        ]
        return await self.store.ingest(items)

    async def quarantine(
        self,
        *,
        source: str,
        body: bytes,
        reason: str,
        received_at: datetime,
        channel: str | None = None,
        details: list[dict[str, Any]] | None = None,
        content_type: str | None = None,
    ) -> int:
        """Keep a refused input; returns its quarantine id."""
        return await self.store.quarantine(
            QuarantineEntry(
                source=source,
                reason=reason,
                body=body,
                received_at=received_at,
                channel=channel,
                details=details or [],
                content_type=content_type,
            )
        )

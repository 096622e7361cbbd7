"""Which subscribers an event goes to: channel globs and payload filters (pure, compiled once per subscriber).

Used by ingest, replay and the runtime; it depends only on the configuration and the store's record types.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relay.config import SubscriberConfig
from relay.store.base import DeliveryPlan

__all__ = ["ChannelMatcher", "PayloadFilter", "Router", "channel_matches", "is_channel_glob"]

_GLOB_CHARS = frozenset("*?[")
_INDEX = re.compile(r"[0-9]+")
_MISSING = object()


class ChannelMatcher:
    """Channel patterns with `fnmatch.fnmatchcase` semantics, compiled once for the hot path.

    `inventory/*`, `*/synced`, `*` and exact names; `*` also spans `/`. Characters that mean something
    in regular expressions (`.`, `+`, `(`, …) are literal in patterns and channel names alike.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        """Compile the patterns.

        Args:
            patterns: glob patterns; a channel matches when any one of them matches. None matches nothing.
        """
        self.patterns = tuple(patterns)
        self._everything = "*" in self.patterns
        self._exact = frozenset(p for p in self.patterns if _GLOB_CHARS.isdisjoint(p))
        globs = [p for p in self.patterns if p not in self._exact]
        self._regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in globs)) if globs else None

    def matches(self, channel: str) -> bool:
        """Whether `channel` matches any pattern.

        Args:
            channel: a channel name such as `inventory/synced`.
        """
        if self._everything or channel in self._exact:
            return True
        return self._regex is not None and self._regex.match(channel) is not None


def is_channel_glob(pattern: str) -> bool:
    """Whether `pattern` has glob characters (`*`, `?`, `[`) rather than naming one channel exactly."""
    return not _GLOB_CHARS.isdisjoint(pattern)


def channel_matches(patterns: Sequence[str], channel: str) -> bool:
    """Whether `channel` matches any of the glob `patterns` (see `ChannelMatcher`; use it on hot paths).

    Args:
        patterns: glob patterns such as `inventory/*`.
        channel: a channel name.
    """
    return ChannelMatcher(patterns).matches(channel)


def _json_equal(a: Any, b: Any) -> bool:
    # JSON value equality: 1 equals 1.0, but "1" is not 1 and true is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


_Segment = tuple[str, int | None]


def _compile_path(path: str) -> tuple[_Segment, ...]:
    parts = path.split(".")
    if not path or any(not part for part in parts):
        raise ValueError(f"filter path {path!r} must be dot-separated names without empty parts")
    return tuple((part, int(part) if _INDEX.fullmatch(part) else None) for part in parts)


def _lookup(payload: Any, path: tuple[_Segment, ...]) -> Any:
    node = payload
    for key, index in path:
        if isinstance(node, Mapping):
            node = node.get(key, _MISSING)
            if node is _MISSING:
                return _MISSING
        elif index is not None and isinstance(node, list | tuple) and index < len(node):
            node = node[index]
        else:
            return _MISSING
    return node


class PayloadFilter:
    """A payload filter such as `{"data.warehouse": ["MAIN", "EAST"], "tenantId": "ACME"}`.

    Every entry must match (AND). An entry's key is a dotted path into the payload, where a number
    indexes a list (`data.lines.0.sku`); its value is one JSON scalar or a list of them (any of). A
    path that is missing never matches. Values compare as JSON values: 1 equals 1.0, but "1" is not 1 and
    true is not 1. An empty filter matches every payload.
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        """Compile the filter.

        Args:
            spec: dotted path → scalar or list of scalars.

        Raises:
            ValueError: an empty path or path part, or a value that is not a scalar or list of scalars.
        """
        rules: list[tuple[tuple[_Segment, ...], tuple[Any, ...]]] = []
        for path, wanted in spec.items():
            allowed = tuple(wanted) if isinstance(wanted, list | tuple) else (wanted,)
            if not all(_is_scalar(v) for v in allowed):
                raise ValueError(f"filter {path!r}: values must be JSON scalars or a list of them")
            rules.append((_compile_path(path), allowed))
        self._rules = tuple(rules)

    def matches(self, payload: Mapping[str, Any]) -> bool:
        """Whether the payload satisfies every entry.

        Args:
            payload: the decoded event JSON.
        """
        for path, allowed in self._rules:
            value = _lookup(payload, path)
            if value is _MISSING or not any(_json_equal(value, a) for a in allowed):
                return False
        return True


@dataclass(frozen=True, slots=True)
class _Route:
    name: str
    channels: ChannelMatcher
    payload_filter: PayloadFilter
    plan: DeliveryPlan


class Router:
    """Which subscribers an event goes to: channel globs and payload filters (pure)."""

    def __init__(self, subscribers: Sequence[SubscriberConfig], disabled: frozenset[str] = frozenset()) -> None:
        self._routes = [
            _Route(
                s.name,
                ChannelMatcher(s.channels),
                PayloadFilter(s.filter),
                DeliveryPlan(
                    s.name,
                    check_stale=s.ordering == "per-key" and not s.deliver_stale,
                    collapse=s.collapse,
                ),
            )
            for s in subscribers
            if s.name not in disabled
        ]

    def plan(self, channel: str, payload: Mapping[str, Any]) -> list[DeliveryPlan]:
        return [r.plan for r in self._routes if r.channels.matches(channel) and r.payload_filter.matches(payload)]

    def subscribers_for(self, channel: str, payload: Mapping[str, Any], only: str | None = None) -> list[str]:
        """Names of the subscribers that match (for replay), optionally only one of them."""
        return [p.subscriber for p in self.plan(channel, payload) if only is None or p.subscriber == only]

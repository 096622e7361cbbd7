"""Which events a subscriber wants: channel globs and payload filters (pure, precompiled)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ChannelMatcher", "PayloadFilter", "channel_matches"]

_MISSING = object()


class ChannelMatcher:
    """Glob patterns over channel names: `inventory/*`, `*/synced`, `*`, or an exact name."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = list(patterns)
        self._everything = "*" in self.patterns
        self._exact = frozenset(p for p in self.patterns if not any(c in p for c in "*?["))
        globs = [p for p in self.patterns if p not in self._exact]
        self._regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in globs)) if globs else None

    def matches(self, channel: str) -> bool:
        if self._everything or channel in self._exact:
            return True
        return self._regex is not None and self._regex.match(channel) is not None


def channel_matches(patterns: Sequence[str], channel: str) -> bool:
    return ChannelMatcher(patterns).matches(channel)


def _same(a: Any, b: Any) -> bool:
    # JSON equality: 1 == 1.0, but booleans are not numbers and "1" is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _lookup(payload: Any, parts: Sequence[str]) -> Any:
    node = payload
    for part in parts:
        if isinstance(node, Mapping):
            node = node.get(part, _MISSING)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


class PayloadFilter:
    """`{"data.warehouse": ["MAIN", "EAST"], "tenantId": "ACME"}`: every path must hold one of its values."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self._rules = [
            (path.split("."), list(values) if isinstance(values, list | tuple) else [values])
            for path, values in spec.items()
        ]

    def matches(self, payload: Mapping[str, Any]) -> bool:
        for parts, allowed in self._rules:
            value = _lookup(payload, parts)
            if value is _MISSING or not any(_same(value, a) for a in allowed):
                return False
        return True

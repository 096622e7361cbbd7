"""Pure rules of the operations layer: the times an operator types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from relay.ops import parse_when

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T09:00:00Z", datetime(2026, 11, 20, 9, tzinfo=UTC)),
        ("2026-11-20T10:00:00+01:00", datetime(2026, 11, 20, 9, tzinfo=UTC)),
        ("2026-11-20T09:00:00", datetime(2026, 11, 20, 9, tzinfo=UTC)),  # naive is UTC
        ("90s", NOW - timedelta(seconds=90)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2h", NOW - timedelta(hours=2)),
        (" 7d ", NOW - timedelta(days=7)),
        ("1w", NOW - timedelta(weeks=1)),
        ("0s", NOW),
    ],
)
def test_parse_when_takes_iso_times_and_times_ago(text: str, expected: datetime) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize(
    "text", ["", "2 hours", "2H", "-2h", "2y", "yesterday", "999999999w", "0001-01-01T00:00+01:00"]
)
def test_parse_when_refuses_anything_else_naming_both_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"ISO 8601 .* or a time ago like 2h"):
        parse_when(text, NOW)

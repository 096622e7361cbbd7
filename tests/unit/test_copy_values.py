"""How `relay store copy` turns an SQLite value into what the PostgreSQL column takes."""

from __future__ import annotations

from typing import Any

import pytest

from relay.store.copy import convert_value


@pytest.mark.parametrize(
    ("value", "pg_type", "expected"),
    [
        (None, "boolean", None),
        (0, "boolean", False),
        (1, "boolean", True),
        (b"\x00\xff", "bytea", b"\x00\xff"),
        ("text in a blob column", "bytea", b"text in a blob column"),
        (memoryview(b"ab"), "bytea", b"ab"),
        (7, "bigint", 7),
        ("12", "integer", 12),
        (3, "double precision", 3.0),
        ("2026-11-20T09:00:00.000000Z", "text", "2026-11-20T09:00:00.000000Z"),
        (b"bytes in a text column", "text", "bytes in a text column"),
        (42, "text", "42"),
    ],
)
def test_convert_value(value: Any, pg_type: str, expected: Any) -> None:
    converted = convert_value(value, pg_type)
    assert converted == expected
    assert type(converted) is type(expected)

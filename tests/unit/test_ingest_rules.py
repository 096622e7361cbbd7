"""The pure rules that refuse a hostile value before it joins a write batch: ids, instants, versions, numbers."""

from __future__ import annotations

from typing import Any

import pytest

from relay.events import (
    TimestampOutOfRange,
    event_id_problem,
    parse_ts,
    utc_text,
    version_order,
    version_problem,
)
from relay.ingest.pipeline import Candidate, check_candidate, inexact_numbers


@pytest.mark.parametrize(
    "text", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00", "0001-01-01T00:00:00.000001+00:01"]
)
def test_instants_outside_the_years_1_to_9999_are_a_value_error(text: str) -> None:
    with pytest.raises(TimestampOutOfRange):
        parse_ts(text)
    with pytest.raises(ValueError, match="outside the years 0001-9999"):
        parse_ts(text)


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("0001-01-01T01:00:00+01:00", "0001-01-01T00:00:00.000000Z"),
        ("9999-12-31T22:59:59-01:00", "9999-12-31T23:59:59.000000Z"),
        ("2026-11-20T10:41:00+01:00", "2026-11-20T09:41:00.000000Z"),
    ],
)
def test_instants_at_the_edges_still_parse(text: str, utc: str) -> None:
    assert utc_text(parse_ts(text)) == utc


@pytest.mark.parametrize("version", ["0001-01-01T00:30:00+01:00", "x\u0000y", "7\n", "a" * 10_000, None, "12"])
def test_version_order_never_raises(version: str | None) -> None:
    assert isinstance(version_order(version), str)


@pytest.mark.parametrize(
    ("version", "problem"),
    [
        ("12", None),
        ("2026-11-20T09:41:56Z", None),
        ("rev B", None),
        ("0001-01-01T00:30:00+01:00", "is outside the years 0001-9999 in UTC"),
        ("7\u00007", "contains a control character"),
        ("7\n", "contains a control character"),
        ("\u0085", "contains a control character"),
        ("v" * 257, "longer than 256 characters"),
    ],
)
def test_version_rules(version: str, problem: str | None) -> None:
    assert version_problem(version) == problem


@pytest.mark.parametrize(
    ("event_id", "ok"),
    [
        ("evt-1", True),
        ("".join(chr(c) for c in range(0x21, 0x7F)), True),
        ("x" * 256, True),
        ("x" * 257, False),
        ("", False),
        ("a b", False),
        ("a\nb", False),
        ("a\u0000b", False),
        ("caf\u00e9", False),
        ("a\x7fb", False),
        (42, False),
        (None, False),
    ],
)
def test_event_id_rule(event_id: Any, ok: bool) -> None:
    assert (event_id_problem(event_id) is None) is ok


def _paths(body: bytes) -> list[str]:
    return [issue.path for issue in inexact_numbers(body)]


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        (b'{"data":{"n":1000000000000000000000000000000}}', ["$.data.n"]),
        (b'{"data":{"n":18446744073709551616}}', ["$.data.n"]),
        (b'{"data":{"n":-9223372036854775809}}', ["$.data.n"]),
        (b'{"data":{"n":123456789012345678.25}}', ["$.data.n"]),
        (b'{"data":{"n":1e-400}}', ["$.data.n"]),
        (b'{"a":[1,{"b":99999999999999999999}],"c d":1.00000000000000000001}', ["$.a[1].b", "$['c d']"]),
        (b'{"data":{"n":18446744073709551615,"m":-9223372036854775808}}', []),
        (b'{"data":{"n":120.5,"m":0.1,"e":1e3,"f":2.4500,"g":1E-5}}', []),
        (b'{"data":{"id":"123456789012345678901234567890","n":1.5}}', []),
        (b'{"data":{"n":0.30000000000000004}}', []),
    ],
)
def test_inexact_numbers_are_found_with_their_paths(body: bytes, paths: list[str]) -> None:
    assert _paths(body) == paths


def _candidate(**data: Any) -> Candidate:
    payload = {"eventId": "e-1", "timestamp": "2026-11-20T09:41:56Z", "data": {"customerNumber": "C1", **data}}
    return Candidate("customer/synced", payload)


@pytest.mark.parametrize(
    ("candidate", "paths"),
    [
        (_candidate(), []),
        (_candidate(lastModified="0001-01-01T00:30:00+01:00"), ["$.data.lastModified"]),
        (_candidate(deletionDate="9999-12-31T23:30:00-01:00"), ["$.data.deletionDate"]),
        (_candidate(customerNumber="C\u001b[31m"), ["$.data.customerNumber"]),
        (_candidate(customerNumber="C" * 1025), ["$.data.customerNumber"]),
        (
            Candidate("order/synced", {"eventId": "a b", "timestamp": "9999-12-31T23:30:00-01:00"}),
            ["$.eventId", "$.timestamp"],
        ),
        (Candidate("order/synced", {"eventId": "e"}, version="1\u00002"), ["variationID"]),
    ],
)
def test_check_candidate_names_each_bad_derived_value(candidate: Candidate, paths: list[str]) -> None:
    assert [i.path for i in check_candidate(candidate, version_path="variationID")] == paths

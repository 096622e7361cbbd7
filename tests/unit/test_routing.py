"""Which events a subscriber gets: channel globs and payload filters."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.routing import ChannelMatcher, PayloadFilter, channel_matches

# ------------------------------------------------------------------------------------------ channels

CHANNEL_CASES = [
    (["inventory/*"], "inventory/synced", True),
    (["inventory/*"], "inventory/", True),
    (["inventory/*"], "inventory", False),
    (["inventory/*"], "order/synced", False),
    (["inventory/*"], "Inventory/synced", False),
    (["*/synced"], "order/synced", True),
    (["*/synced"], "order/deleted", False),
    (["*/synced"], "synced", False),
    (["*"], "customer/deleted", True),
    (["*"], "", True),
    (["*"], "weird[chan]?/with.regex+chars(x)", True),
    (["order/synced"], "order/synced", True),
    (["order/synced"], "order/synced2", False),
    (["order/synced"], "order/synce", False),
    (["order.synced"], "orderXsynced", False),
    (["order/synced", "inventory/*"], "inventory/synced", True),
    (["order/synced", "inventory/*"], "invoice/synced", False),
    (["a+b/*"], "a+b/c", True),
    (["a+b/*"], "aab/c", False),
    (["(x)/*"], "(x)/y", True),
    (["inv?ntory/synced"], "inventory/synced", True),
    (["[io]*/synced"], "order/synced", True),
    (["[io]*/synced"], "customer/synced", False),
    (["*/sync*"], "order/synced", True),
    ([], "order/synced", False),
]


@pytest.mark.parametrize(("patterns", "channel", "expected"), CHANNEL_CASES)
def test_channel_matches(patterns: list[str], channel: str, expected: bool) -> None:
    assert channel_matches(patterns, channel) is expected
    assert ChannelMatcher(patterns).matches(channel) is expected


def test_channel_star_spans_slashes_like_fnmatch() -> None:
    assert channel_matches(["inventory/*"], "inventory/eu/synced")


_channel_chars = st.sampled_from(list("ab/.*?[]!-+()\\^$|{}\n"))


@given(
    patterns=st.lists(st.text(_channel_chars, max_size=8), max_size=4),
    channel=st.text(_channel_chars, max_size=10),
)
def test_channel_matcher_agrees_with_fnmatchcase(patterns: list[str], channel: str) -> None:
    expected = any(fnmatch.fnmatchcase(channel, p) for p in patterns)
    assert ChannelMatcher(patterns).matches(channel) is expected


# ------------------------------------------------------------------------------------------ payload filter

PAYLOAD: dict[str, Any] = {
    "eventId": "evt-1",
    "tenantId": "ACME",
    "data": {
        "warehouse": "MAIN",
        "quantity": 1,
        "price": 2.5,
        "code": "1",
        "active": True,
        "note": None,
        "lines": [{"sku": "A-1", "qty": 3}, {"sku": "B-2", "qty": 0}],
        "tags": ["x", "y"],
        "0": "key named zero",
    },
}

FILTER_CASES = {
    "empty filter": ({}, True),
    "scalar match": ({"tenantId": "ACME"}, True),
    "scalar mismatch": ({"tenantId": "OTHER"}, False),
    "case matters": ({"tenantId": "acme"}, False),
    "list any-of": ({"data.warehouse": ["MAIN", "EAST"]}, True),
    "list none": ({"data.warehouse": ["WEST", "EAST"]}, False),
    "empty list": ({"data.warehouse": []}, False),
    "AND all match": ({"data.warehouse": ["MAIN", "EAST"], "tenantId": "ACME"}, True),
    "AND one fails": ({"data.warehouse": ["MAIN", "EAST"], "tenantId": "OTHER"}, False),
    "missing path": ({"data.region": "EU"}, False),
    "missing path with null wanted": ({"data.region": None}, False),
    "path through a scalar": ({"tenantId.name": "ACME"}, False),
    "explicit null": ({"data.note": None}, True),
    "int equals float": ({"data.quantity": 1.0}, True),
    "float equals float": ({"data.price": 2.5}, True),
    "int is not string": ({"data.quantity": "1"}, False),
    "string is not int": ({"data.code": 1}, False),
    "string equals string": ({"data.code": "1"}, True),
    "bool is not int": ({"data.quantity": True}, False),
    "int is not bool": ({"data.active": 1}, False),
    "bool equals bool": ({"data.active": True}, True),
    "zero is not false": ({"data.lines.1.qty": False}, False),
    "list index": ({"data.lines.0.sku": "A-1"}, True),
    "second list index": ({"data.lines.1.sku": ["B-2", "C-3"]}, True),
    "index past the end": ({"data.lines.2.sku": "A-1"}, False),
    "name on a list": ({"data.lines.sku": "A-1"}, False),
    "index of a scalar list": ({"data.tags.1": "y"}, True),
    "digit key in an object": ({"data.0": "key named zero"}, True),
    "an object value never equals a scalar": ({"data": "MAIN"}, False),
    "a list value never equals a scalar": ({"data.tags": "x"}, False),
    "tuple as any-of": ({"data.warehouse": ("EAST", "MAIN")}, True),
}


@pytest.mark.parametrize(("spec", "expected"), FILTER_CASES.values(), ids=FILTER_CASES.keys())
def test_payload_filter(spec: dict[str, Any], expected: bool) -> None:
    assert PayloadFilter(spec).matches(PAYLOAD) is expected


def test_payload_filter_is_reusable_across_payloads() -> None:
    flt = PayloadFilter({"data.warehouse": ["MAIN", "EAST"]})
    warehouses = ["MAIN", "WEST", "EAST", None]
    assert [flt.matches({"data": {"warehouse": w}}) for w in warehouses] == [True, False, True, False]
    assert not flt.matches({})
    assert not flt.matches({"data": []})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"": "x"}, "dot-separated"),
        ({"data..warehouse": "x"}, "dot-separated"),
        ({"data.": "x"}, "dot-separated"),
        ({"data.warehouse": {"in": ["MAIN"]}}, "JSON scalars"),
        ({"data.warehouse": [["MAIN"]]}, "JSON scalars"),
    ],
)
def test_payload_filter_refuses_malformed_config(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PayloadFilter(spec)

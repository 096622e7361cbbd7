"""IMS request rules: which part is which, batch parameters, character sets."""

from __future__ import annotations

from typing import Any

import pytest

from relay.ingest.ion_ims import Part, batch_problem, is_batch_abort, pick_ims_parts, to_utf8

P, X = b'{"documentName":"Sync.SalesOrder"}', b"<SyncSalesOrder/>"


@pytest.mark.parametrize(
    "parts",
    [
        [Part("ParameterRequest", "application/json", P), Part("MessagePayload", "application/xml", X)],
        [Part("MessagePayload", "application/xml", X), Part("ParameterRequest", "application/json", P)],
        [Part("ParameterRequest", "application/json", P), Part("ParameterRequest", "application/xml", X)],
        [Part("MessagePayload", "application/xml", X), Part("MessagePayload", "application/json; charset=utf-8", P)],
        [Part("data", "text/plain", P), Part("data", "text/plain", X)],  # no hint: parameters first
        [Part(None, "", P), Part(None, "", X)],
    ],
)
def test_parts_by_name_content_type_or_order(parts: list[Part]) -> None:
    assert pick_ims_parts(parts) == (P, X)


@pytest.mark.parametrize(
    "parts",
    [[], [Part("ParameterRequest", "application/json", P)], [Part("a", "", P), Part("b", "", X), Part("c", "", X)]],
)
def test_parts_that_cannot_be_told_apart(parts: list[Part]) -> None:
    with pytest.raises(ValueError, match="ParameterRequest and MessagePayload are both required"):
        pick_ims_parts(parts)


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({}, None),
        ({"batchId": "b", "batchSequence": 1, "batchSize": "3", "batchAbortIndicator": False}, None),
        ({"batchSequence": "9223372036854775807"}, None),
        ({"batchSequence": "9223372036854775808"}, "batchSequence"),
        ({"batchSize": -1}, "batchSize"),
        ({"batchRevision": True}, "batchRevision"),
        ({"batchId": "x" * 251}, "batchId"),
        ({"batchAbortIndicator": "maybe"}, "batchAbortIndicator"),
    ],
)
def test_batch_parameters(params: dict[str, Any], problem: str | None) -> None:
    found = batch_problem(params)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_batch_abort() -> None:
    assert is_batch_abort({"batchAbortIndicator": True})
    assert is_batch_abort({"batchAbortIndicator": "true"})
    assert not is_batch_abort({"batchAbortIndicator": False})
    assert not is_batch_abort({})


def test_character_set() -> None:
    latin = "<a>Drähte</a>".encode("latin-1")
    assert to_utf8(latin, "ISO-8859-1") == "<a>Drähte</a>".encode()
    declared = b'<?xml version="1.0" encoding="ISO-8859-1"?><a>\xe4</a>'
    assert to_utf8(declared, "ISO-8859-1") == declared  # the declaration is what the parser follows
    assert to_utf8(X, None) == X
    assert to_utf8(X, "UTF-8") == X
    with pytest.raises(ValueError, match="not a known character set"):
        to_utf8(X, "no-such-set")
    with pytest.raises(ValueError, match="not valid UTF-16"):
        to_utf8(b"\x00", "UTF-16")

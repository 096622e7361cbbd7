"""Pure rules of onboarding: custom fields in `extensions`, discovery drafts, shapes and drift, source health."""

from __future__ import annotations

import re

import pytest

from relay.onboarding.checklist import verdict
from relay.onboarding.discover import (
    DEFAULT_MASK,
    canonical_fields,
    custom_fields,
    json_type,
    mask_example,
    profile_fields,
    propose,
)
from relay.poll.changes import FieldRule, RecordMapping, extension_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("extensions.leadTimeDays", "leadTimeDays"),
        ("leadTimeDays", None),
        ("extensionsX.a", None),
        ("extensions.", None),
    ],
)
def test_extension_names(name: str, expected: str | None) -> None:
    assert extension_name(name) == expected


def test_custom_fields_are_gathered_in_extensions_and_left_out_when_empty() -> None:
    mapping = RecordMapping.parse(
        {"fields": {"extensions.leadTimeDays": {"path": "ZLEADTIME", "type": "integer"}, "extensions.dock": "user5"}},
        defaults=RecordMapping({"partNumber": FieldRule("ITMREF")}),
    )
    assert mapping.data({"ITMREF": "BOX", "ZLEADTIME": "7", "user5": "D1"}) == {
        "partNumber": "BOX",
        "extensions": {"leadTimeDays": 7, "dock": "D1"},
    }
    assert mapping.data({"ITMREF": "BOX", "ZLEADTIME": ""}) == {"partNumber": "BOX"}


@pytest.mark.parametrize("name", ["extensions", "extensions.a.b", "extensions.9lives", "extensions.a b"])
def test_a_malformed_custom_field_name_is_refused_with_its_name(name: str) -> None:
    with pytest.raises(ValueError, match=r"extensions\.NAME"):
        RecordMapping.parse({"fields": {name: "ZLEADTIME"}})


@pytest.mark.parametrize(
    ("value", "kind"),
    [(None, "null"), (True, "boolean"), (3, "integer"), (3.5, "number"), ("x", "string"), ({}, "object"),
     ([1], "array")],
)  # fmt: skip
def test_json_types(value: object, kind: str) -> None:
    assert json_type(value) == kind


MASK = re.compile(DEFAULT_MASK)


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("BPCNAM", "Thames Foods 4", "T••••••••"),
        ("email", "ap1@example.com", "a••••••••"),
        ("NOTE", "ap1@example.com", "a••••••••"),  # an e-mail address under any name
        ("phoneno", "2175550100", "2••••••••"),
        ("REF", "+44 20 7946 0958", "+••••••••"),  # a phone number under any name
        ("transdt", "2026-11-20", "2026-11-20"),  # a date is not a phone number
        ("PHYSTO", 3765, "3765"),
        ("NOTE", "x" * 50, "x" * 39 + "…"),
        ("CUSTOMER_NAME", "", ""),
    ],
)
def test_examples_are_masked_by_field_name_and_by_what_they_look_like(name: str, value: object, shown: str) -> None:
    assert mask_example(name, value, MASK) == shown


def test_a_profile_has_types_fill_rate_and_two_distinct_examples() -> None:
    records = [
        {"ITMREF": "A", "QTY": 1, "ZLEADTIME": "4", "LINES": [{"NO": 1}], "TAGS": []},
        {"ITMREF": "B", "QTY": 2.5, "ZLEADTIME": None},
        {"ITMREF": "B", "QTY": 3, "ZLEADTIME": ""},
        {"ITMREF": "C", "QTY": 4, "UPD": {"AT": "2026-11-20T07:00:00Z"}},
    ]
    profiles = {p.path: p for p in profile_fields(records, MASK)}
    assert list(profiles) == ["ITMREF", "QTY", "ZLEADTIME", "LINES.0.NO", "TAGS", "UPD.AT"]
    assert (profiles["ITMREF"].examples, profiles["ITMREF"].fill_rate) == (["A", "B"], 1.0)
    assert (profiles["QTY"].types, profiles["QTY"].suggested_type) == (["integer", "number"], "number")
    assert (profiles["ZLEADTIME"].types, profiles["ZLEADTIME"].fill_rate) == (["string", "null"], 0.25)
    assert profiles["UPD.AT"].suggested_type == "date-time"
    assert profiles["TAGS"].fill_rate == 0.0


def test_proposals_take_the_default_then_a_similar_name_and_the_rest_are_custom_fields() -> None:
    mapping = RecordMapping({"partNumber": FieldRule("ITMREF")}, updated_path="UPDDATTIM")
    canonical = {"partNumber": "str", "warehouse": "str", "unitOfMeasure": "str", "onHand": "number"}
    records = [{"ITMREF": "A", "WAREHOUSE_CODE": "W1", "ON_HAND": 4, "ZLEADTIME": 3, "UPDDATTIM": "x", "$uuid": "u"}]
    profiles = profile_fields(records, MASK)
    proposals = propose(canonical, mapping, profiles)  # type: ignore[arg-type]
    assert [(p.canonical, p.path, p.how) for p in proposals] == [
        ("partNumber", "ITMREF", "default"),
        ("warehouse", "WAREHOUSE_CODE", "similar"),
        ("unitOfMeasure", None, "none"),
        ("onHand", "ON_HAND", "similar"),
    ]
    assert [(c.path, c.suggestion, c.type) for c in custom_fields(profiles, mapping, proposals)] == [
        ("ZLEADTIME", "extensions.zleadtime", "integer")
    ]
    mapped = RecordMapping.parse({"fields": {"extensions.zleadtime": "ZLEADTIME"}}, defaults=mapping)
    assert custom_fields(profile_fields(records, MASK), mapped, proposals) == []  # mapped already


def test_canonical_fields_of_a_message_and_their_types() -> None:
    schema = {"properties": {"data": {"properties": {
        "a": {"type": "string"}, "n": {"type": "number"}, "i": {"type": "integer"}, "b": {"type": "boolean"},
        "d": {"type": "string", "format": "date"}, "t": {"type": "string", "format": "date-time"},
        "extensions": {"type": "object"}}}}}  # fmt: skip
    assert canonical_fields(schema) == {"a": "str", "n": "number", "i": "integer", "b": "bool", "d": "date",
                                        "t": "date-time"}  # fmt: skip


@pytest.mark.parametrize(
    ("status", "permission", "expected"),
    [(403, True, "refused"), (401, False, "refused"), (404, False, "missing"), (500, False, "failed"),
     (None, False, "failed")],
)  # fmt: skip
def test_probe_verdicts(status: int | None, permission: bool, expected: str) -> None:
    assert verdict(status, permission) == expected

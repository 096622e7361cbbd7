"""Pure rules of onboarding: custom fields in `extensions`, discovery drafts, shapes and drift, source health."""

from __future__ import annotations

import pytest

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

"""Pure polling rules: mapping, hashes, change and deletion detection, schedule timing."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from relay.poll.changes import (
    FieldRule,
    RecordMapping,
    content_hash,
    deleted_payload,
    detect_changes,
    poll_event_id,
    vanished_keys,
)
from relay.poll.scheduler import backoff_s, cron_next, next_delay_s

MAPPING = RecordMapping(
    fields={
        "customerNumber": FieldRule("BPCNUM"),
        "customerName": FieldRule("BPCNAM"),
        "creditLimit": FieldRule("CRE.limit", "number"),
        "lastModified": FieldRule("UPDDATTIM", "date-time"),
    },
    updated_path="UPDDATTIM",
)


def test_mapping_reads_paths_and_coerces_types() -> None:
    record = {"BPCNUM": 42, "BPCNAM": "Aldgate", "CRE": {"limit": "1500.50"}, "UPDDATTIM": "2026-11-20T10:45:19+01:00"}
    assert MAPPING.data(record) == {
        "customerNumber": "42",
        "customerName": "Aldgate",
        "creditLimit": 1500.5,
        "lastModified": "2026-11-20T09:45:19Z",
    }
    assert MAPPING.updated(record) == "2026-11-20T09:45:19Z"
    assert MAPPING.data({"BPCNUM": "7", "UPDDATTIM": "garbage"}) == {"customerNumber": "7"}


@pytest.mark.parametrize(
    ("raw", "kind", "expected"),
    [
        ("12345678901234567890", "number", 12345678901234567890),
        ("123456789012345678901234567890", "number", None),
        ("123456789012345678.25", "number", None),
        ("1e400", "number", None),
        ("1e400", "integer", None),
        ("12.7", "integer", 12),
        ("1500", "number", 1500),
        (12.0, "number", 12.0),
        ("0001-01-01T00:30:00+01:00", "date-time", None),
        ("9999-12-31T23:30:00-01:00", "date-time", None),
    ],
)
def test_a_value_that_cannot_be_kept_exactly_is_left_out_not_raised(raw: object, kind: str, expected: object) -> None:
    mapping = RecordMapping(fields={"customerNumber": FieldRule("ID"), "v": FieldRule("V", kind)})
    data = mapping.data({"ID": "C1", "V": raw})
    assert data.get("v") == expected
    assert type(data.get("v")) is type(expected)


def test_mapping_overrides_from_config() -> None:
    mapping = RecordMapping.parse(
        {"fields": {"customerName": "NAME2", "creditLimit": {"path": "X", "type": "integer"}}}, defaults=MAPPING
    )
    assert mapping.fields["customerName"] == FieldRule("NAME2")
    assert mapping.fields["creditLimit"] == FieldRule("X", "integer")
    assert mapping.fields["customerNumber"] == FieldRule("BPCNUM")
    with pytest.raises(ValueError, match="'bad'"):
        RecordMapping.parse({"fields": {"bad": {"path": "X", "type": "colour"}}})


def test_hash_ignores_key_order_and_ids_are_deterministic() -> None:
    assert content_hash({"a": 1, "b": 2}) == content_hash({"b": 2, "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})
    assert poll_event_id("x3", "BPCUSTOMER", "C1", "h") == poll_event_id("x3", "BPCUSTOMER", "C1", "h")
    assert poll_event_id("x3", "BPCUSTOMER", "C1", "h") != poll_event_id("x3", "BPCUSTOMER", "C1", "h2")


def test_only_changed_or_new_records_are_emitted() -> None:
    previous = {"C1": content_hash({"n": 1}), "C2": content_hash({"n": 2})}
    changes = detect_changes(
        [("C1", {"n": 1}, None), ("C2", {"n": 3}, "v2"), ("C3", {"n": 9}, None), ("C3", {"n": 10}, "v3")], previous
    )
    assert [(c.key, c.data, c.version) for c in changes] == [("C2", {"n": 3}, "v2"), ("C3", {"n": 10}, "v3")]


def test_vanished_keys_and_deleted_payload() -> None:
    assert vanished_keys(["A", "B", "C"], ["A", "C", "D"]) == ["B"]
    now = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    payload = deleted_payload(
        "inventory/deleted", "P-1|MAIN", event_id="e", document_type="DeleteInventory", tenant_id="ALD", now=now
    )
    assert payload["data"] == {"partNumber": "P-1", "warehouse": "MAIN", "deletionDate": "2026-11-20T10:00:00Z"}
    assert payload["tenantId"] == "ALD"


def test_schedule_timing() -> None:
    rng = random.Random(1)
    delays = [next_delay_s(60, 0.1, rng) for _ in range(200)]
    assert min(delays) >= 54
    assert max(delays) <= 66
    assert backoff_s(1, retry_after_s=None, every_s=5) == 5
    assert backoff_s(3, retry_after_s=None, every_s=5) == 20
    assert backoff_s(30, retry_after_s=None, every_s=5) == 300
    assert backoff_s(1, retry_after_s=42, every_s=5) == 42


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("*/15 * * * *", "2026-11-20T10:07:30", "2026-11-20T10:15:00"),
        ("0 2 * * *", "2026-11-20T10:07:00", "2026-11-21T02:00:00"),
        ("30 8 * * 1-5", "2026-11-21T09:00:00", "2026-11-23T08:30:00"),  # Saturday → Monday
    ],
)
def test_cron_next(expr: str, after: str, expected: str) -> None:
    got = cron_next(expr, datetime.fromisoformat(after).replace(tzinfo=UTC))
    assert got == datetime.fromisoformat(expected).replace(tzinfo=UTC)


def test_bad_cron_is_refused() -> None:
    with pytest.raises(ValueError, match="5 fields"):
        cron_next("* * *", datetime.now(UTC))
    with pytest.raises(ValueError, match="out of range"):
        cron_next("61 * * * *", datetime.now(UTC))


def test_early_years_keep_four_digits_in_date_times() -> None:
    from relay.events import parse_ts, utc_seconds_text

    assert utc_seconds_text(parse_ts("0999-01-02T03:04:05.678+01:00")) == "0999-01-02T02:04:05Z"
    assert utc_seconds_text(parse_ts("2026-11-20T09:41:56Z")) == "2026-11-20T09:41:56Z"

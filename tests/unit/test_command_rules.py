"""The pure rules of write-back commands: keys, body identity, retries, pacing, mappings, ERP answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relay.commands.erp import _status_attempt, x3_diagnoses
from relay.commands.mapping import build_body, mapping_for
from relay.commands.policy import body_hash, command_identity, idempotency_key_problem, next_retry_at, next_start_at
from relay.config import ConfigError, X3Source, config_from_mapping, parse_rate

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("quote-1001", None),
        ("x" * 255, None),
        (" ~!", None),
        (None, "required"),
        ("", "required"),
        ("x" * 256, "longer than 255"),
        ("caf\u00e9", "printable ASCII"),
        ("a\tb", "printable ASCII"),
        ("a\x7f", "printable ASCII"),
    ],
)
def test_idempotency_key(key: str | None, problem: str | None) -> None:
    found = idempotency_key_problem(key)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_body_hash_ignores_spelling_not_content() -> None:
    assert body_hash({"a": 1, "b": [1, 2]}) == body_hash({"b": [1, 2], "a": 1})
    assert body_hash({"a": 1}) != body_hash({"a": 2})
    assert body_hash({"lines": [1, 2]}) != body_hash({"lines": [2, 1]})


@pytest.mark.parametrize(
    ("command", "payload", "identity"),
    [
        ("order/create", {"customerNumber": "C1", "customerReference": "Q-1"}, ("C1", "Q-1")),
        ("customer/create", {"name": "Acme", "customerNumber": "C9"}, ("C9", "C9")),
        ("customer/create", {"name": "Acme"}, ("name:Acme", None)),
        ("customer/update", {"customerNumber": "C9", "phone": "1"}, ("C9", "C9")),
    ],
)
def test_command_identity(command: str, payload: dict[str, Any], identity: tuple[str, str | None]) -> None:
    assert command_identity(command, payload) == identity


@pytest.mark.parametrize(
    ("attempts", "retry_after_s", "window_age_s", "expected_wait_s"),
    [
        (1, None, 0, 2.0),
        (2, None, 0, 10.0),
        (5, None, 0, 1800.0),
        (9, None, 0, 1800.0),  # the last step repeats
        (1, 30.0, 0, 30.0),  # Retry-After longer than the step wins
        (2, 1.0, 0, 10.0),
        (1, None, 86399, None),  # past max_age: no more retries
    ],
)
def test_next_retry_at(
    attempts: int, retry_after_s: float | None, window_age_s: float, expected_wait_s: float | None
) -> None:
    at = next_retry_at(
        attempts,
        schedule_s=[2.0, 10.0, 60.0, 300.0, 1800.0],
        window_start=NOW - timedelta(seconds=window_age_s),
        max_age_s=86400.0,
        now=NOW,
        retry_after_s=retry_after_s,
    )
    assert at == (None if expected_wait_s is None else NOW + timedelta(seconds=expected_wait_s))


@pytest.mark.parametrize(
    ("previous_s", "rate", "expected_s"),
    [(None, 5.0, 0.0), (-1.0, 5.0, 0.0), (-0.1, 5.0, 0.1), (0.0, 2.0, 0.5), (0.0, None, 0.0)],
)
def test_next_start_at(previous_s: float | None, rate: float | None, expected_s: float) -> None:
    previous = None if previous_s is None else NOW + timedelta(seconds=previous_s)
    assert next_start_at(previous, rate, NOW) == NOW + timedelta(seconds=expected_s)


ORDER = {
    "customerNumber": "C00001",
    "customerReference": "Q-1",
    "orderDate": "2026-12-02",
    "site": "ALD01",
    "shipTo": {"city": "Leeds"},
    "lines": [{"partNumber": "BOX", "quantity": 2, "unitPrice": 1.5}, {"partNumber": "TAPE", "quantity": 1}],
}


@pytest.mark.parametrize(
    ("kind", "overrides", "header", "lines"),
    [
        (
            "x3",
            None,
            {"BPCORD": "C00001", "CUSORDREF": "Q-1", "ORDDAT": "2026-12-02", "SALFCY": "ALD01"},
            [{"ITMREF": "BOX", "QTY": 2, "GROPRI": 1.5}, {"ITMREF": "TAPE", "QTY": 1}],
        ),
        (
            "x3",
            {"fields": {"SALFCY": None, "YQUOTE": "customerReference"}, "defaults": {"SOHTYP": "WEB"}},
            {"SOHTYP": "WEB", "BPCORD": "C00001", "CUSORDREF": "Q-1", "ORDDAT": "2026-12-02", "YQUOTE": "Q-1"},
            [{"ITMREF": "BOX", "QTY": 2, "GROPRI": 1.5}, {"ITMREF": "TAPE", "QTY": 1}],
        ),
        (
            "sxe",
            None,
            {
                "ordersource": "RELAY",
                "ordertype": "SO",
                "customerid": "C00001",
                "ponumber": "Q-1",
                "shiptocity": "Leeds",
            },
            [{"itemnumber": "BOX", "orderqty": 2, "price": 1.5}, {"itemnumber": "TAPE", "orderqty": 1}],
        ),
    ],
)
def test_order_mapping_is_table_driven_and_overridable(
    kind: str, overrides: dict[str, Any] | None, header: dict[str, Any], lines: list[dict[str, Any]]
) -> None:
    assert build_body(mapping_for(kind, "order/create", overrides), ORDER) == (header, lines)


def test_mapping_overrides_of_unknown_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown keys colour"):
        mapping_for("x3", "order/create", {"colour": "red"})


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "refused"),
        (422, "refused"),
        (404, "refused"),
        (401, "transient"),
        (429, "transient"),
        (503, "transient"),
        (408, "unknown"),
        (500, "unknown"),
        (502, "unknown"),
    ],
)
def test_what_an_erp_status_means(status: int, kind: str) -> None:
    assert _status_attempt(status, ["msg"], "X3 create SORDER", None).kind == kind


def test_x3_diagnoses_are_read_from_the_resource_its_properties_and_lines() -> None:
    body = {
        "$diagnoses": [{"$severity": "error", "$message": "top"}, {"$severity": "info", "$message": "fyi"}],
        "$properties": {"BPCORD": {"$diagnoses": [{"$severity": "error", "$message": "BPCORD: no such customer"}]}},
        "SOHSOP": [{"$diagnoses": [{"$message": "line 1"}]}],
    }
    assert x3_diagnoses(body) == ["top", "BPCORD: no such customer", "line 1"]


@pytest.mark.parametrize(
    ("text", "per_s"),
    [("5/s", 5.0), ("30/m", 0.5), ("360/h", 0.1), (2, 2.0), ("0/s", None), (None, None), ("1.5 / s", 1.5)],
)
def test_rate_limits(text: Any, per_s: float | None) -> None:
    assert parse_rate(text) == per_s


@pytest.mark.parametrize("text", ["fast", "5/d", "-1/s", "5 per s"])
def test_bad_rate_limits_are_refused(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is checked through the config error below
        parse_rate(text)


X3 = {"name": "aldgate-x3", "kind": "x3", "base_url": "http://x3", "folder": "ALDGATE", "auth": {"type": "none"}}
BEARER = {"type": "bearer", "tokens": ["quotes-token-0123456789"]}


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (X3, "needs `resources` to poll or `commands` to accept"),
        ({**X3, "commands": {"auth": BEARER, "rate_limit": "often"}}, "not a rate"),
        ({**X3, "commands": {"auth": BEARER, "allow": ["order/delete"]}}, "allow[0]: Input should be 'order/create'"),
        ({**X3, "commands": {"auth": BEARER, "mappings": {"order/cancel": {}}}}, "mappings for unknown commands"),
        ({**X3, "commands": {"auth": BEARER, "max_in_flight": 0}}, "max_in_flight"),
        ({**X3, "commands": {"auth": BEARER, "mappings": {"order/create": {"colour": 1}}}}, "unknown keys colour"),
        ({**X3, "commands": {"auth": BEARER, "mappings": {"order/create": {"fields": ["BPCORD"]}}}}, "must map"),
        ({**X3, "commands": {"allow": ["order/create"]}}, "auth"),
    ],
)
def test_commands_configuration_problems_are_named(source: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"sources": [source]})
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_a_write_only_connection_is_valid() -> None:
    config = config_from_mapping({"sources": [{**X3, "commands": {"auth": BEARER, "rate_limit": "5/s"}}]})
    source = config.sources[0]
    assert isinstance(source, X3Source)
    assert source.resources == []
    assert source.commands is not None
    assert source.commands.rate_limit == 5.0
    assert source.commands.allow == ["order/create", "customer/create", "customer/update"]

"""Requests that can never be sent: which header values are refused, and what the retry policy does then."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from helpers import WHSEC

from relay.config import ConfigError, config_from_mapping
from relay.deliver.retry import AttemptOutcome, decide
from relay.signing import header_refusal

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("webhook-id", "pk-bad-1\n", "webhook-id has a control character (U+000A), which an HTTP header cannot carry"),
        ("webhook-id", "a\rb", "webhook-id has a control character (U+000D)"),
        ("relay-channel", "order/synced\r\nx-injected: 1", "relay-channel has a control character (U+000D)"),
        ("relay-source", "hub\x00", "relay-source has a control character (U+0000)"),
        ("webhook-id", "del\x7f", "webhook-id has a control character (U+007F)"),
        ("webhook-id", "esc\x1b[31m", "webhook-id has a control character (U+001B)"),
        ("webhook-id", "bad-\ud800", "webhook-id has a lone surrogate (U+D800)"),
        ("x bad", "s3cret", "header name 'x bad' is not an HTTP token"),
        ("x:bad", "s3cret", "header name 'x:bad' is not an HTTP token"),
        ("", "s3cret", "header name '' is not an HTTP token"),
        ("x-évt", "s3cret", "is not an HTTP token"),
    ],
)
def test_header_refusal_names_the_header_and_the_character(name: str, value: str, reason: str) -> None:
    refusal = header_refusal(name, value)
    assert refusal is not None
    assert reason in refusal
    assert value not in refusal  # the value itself is never repeated


@pytest.mark.parametrize(
    ("name", "value"),
    [("webhook-id", "evt-1"), ("x-tab", "a\tb"), ("x-api-key", "k3y!#$%&'*+.^_`|~"), ("x-unicode", "évt-①")],
)
def test_sendable_headers_pass(name: str, value: str) -> None:
    assert header_refusal(name, value) is None


def _decide(outcome: AttemptOutcome, attempt: int = 1) -> tuple[str, str]:
    decision = decide(
        outcome,
        attempt=attempt,
        now=NOW,
        created_at=NOW,
        schedule_s=[5.0, 300.0],
        max_age_s=86400.0,
        rng=random.Random(1),
    )
    return decision.action, decision.reason


def test_a_permanent_failure_is_dead_at_once() -> None:
    outcome = AttemptOutcome(error="cannot be sent: webhook-id has a control character (U+000A)", permanent=True)
    assert _decide(outcome) == (
        "dead",
        "cannot be sent: webhook-id has a control character (U+000A) (not retried: it cannot succeed)",
    )


def test_other_failures_without_an_answer_still_follow_the_schedule() -> None:
    assert _decide(AttemptOutcome(error="ValueError: boom"))[0] == "retry"
    assert _decide(AttemptOutcome(error="ValueError: boom"), attempt=3) == ("dead", "ValueError: boom after 3 attempts")


def _subscriber(headers: dict[str, str]) -> dict[str, object]:
    return {"name": "s", "url": "https://hooks.example.com/h", "secrets": [WHSEC], "headers": headers}


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"x-api-key": "abc\ndef"}, "headers: x-api-key has a control character (U+000A)"),
        ({"x bad": "v"}, "headers: header name 'x bad' is not an HTTP token"),
        ({"Webhook-Signature": "v1,forged"}, "headers: Webhook-Signature is set by the relay on every delivery"),
        ({"Content-Type": "text/plain"}, "headers: Content-Type is set by the relay on every delivery"),
    ],
)
def test_configured_headers_that_cannot_be_sent_are_refused_at_load(headers: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"subscribers": [_subscriber(headers)]})
    assert any(message in problem for problem in info.value.problems), info.value.problems


def test_ordinary_configured_headers_load() -> None:
    config = config_from_mapping({"subscribers": [_subscriber({"Authorization": "Bearer t", "x-tenant": "a\tb"})]})
    assert config.subscribers[0].headers == {"Authorization": "Bearer t", "x-tenant": "a\tb"}

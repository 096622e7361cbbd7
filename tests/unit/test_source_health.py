"""Source health rules: when a resource is announced failing and recovered, once per transition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from relay.onboarding.health import (
    Failure,
    HealthState,
    Transition,
    error_class,
    health_event_id,
    health_payload,
    health_step,
    redact_urls,
)
from relay.spec import builtin_spec_paths, load_specs

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
OK = None
TIMEOUT = Failure("unavailable", "timeout")
E500 = Failure("http-500", "HTTP 500 internal error")
E404 = Failure("http-404", "HTTP 404")


@pytest.mark.parametrize(
    ("status", "expected"),
    [(None, "unavailable"), (503, "unavailable"), (504, "unavailable"), (429, "rate-limited"), (401, "auth"),
     (403, "auth"), (404, "http-404"), (500, "http-500")],
)  # fmt: skip
def test_error_classes(status: int | None, expected: str) -> None:
    assert error_class(status) == expected


def _run(outcomes: list[Failure | None], *, n: int = 3, state: HealthState | None = None) -> list[str]:
    """The transitions announced over a sequence of poll outcomes, one minute apart."""
    state = state or HealthState()
    announced = []
    for i, outcome in enumerate(outcomes):
        state, transition = health_step(state, outcome, T0 + timedelta(minutes=i), failures_before_failing=n)
        if transition is not None:
            announced.append(f"{i}:{transition.state}:{transition.failures}")
    return announced


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        # Transient errors need the streak; a shorter one is not announced.
        ([TIMEOUT, TIMEOUT, OK], []),
        ([TIMEOUT, TIMEOUT, TIMEOUT, TIMEOUT, OK], ["2:failing:3", "4:recovered:4"]),
        # Never announced twice while it keeps failing or keeps succeeding.
        ([TIMEOUT] * 6 + [OK] * 3, ["2:failing:3", "6:recovered:6"]),
        # A definite error of a new class right after a success: at once.
        ([OK, E500, E500, OK], ["1:failing:1", "3:recovered:2"]),
        # The first poll has no success before it: the streak applies.
        ([E500, E500, E500], ["2:failing:3"]),
        # After recovering from 500s, a new 500 is not news; a 404 is.
        ([OK, E500, OK, E500, OK, E404], ["1:failing:1", "2:recovered:1", "5:failing:1"]),
        # An error class change inside a failure streak does not shortcut it.
        ([OK, TIMEOUT, E500, E500], ["3:failing:3"]),
    ],
)
def test_transitions(outcomes: list[Failure | None], expected: list[str]) -> None:
    assert _run(outcomes) == expected


def test_a_threshold_of_one_announces_the_first_failure() -> None:
    assert _run([TIMEOUT, OK], n=1) == ["0:failing:1", "1:recovered:1"]


def test_the_stored_state_survives_a_restart_without_re_announcing() -> None:
    state = HealthState()
    for i in range(3):
        state, _ = health_step(state, TIMEOUT, T0 + timedelta(minutes=i), failures_before_failing=3)
    restored = HealthState.from_json(state.to_json())
    assert restored.failing
    assert restored.failures == 3
    assert restored.streak_started_at == T0
    after, transition = health_step(restored, TIMEOUT, T0 + timedelta(minutes=5), failures_before_failing=3)
    assert transition is None
    assert after.failures == 4
    _, recovered = health_step(after, OK, T0 + timedelta(minutes=6), failures_before_failing=3)
    assert recovered == Transition("recovered", T0 + timedelta(minutes=6), "timeout", 4)
    assert HealthState.from_json(None) == HealthState()


def test_failing_since_is_the_start_of_the_streak_and_ids_are_deterministic() -> None:
    state = HealthState()
    transitions = []
    for i in range(3):
        state, t = health_step(state, TIMEOUT, T0 + timedelta(minutes=i), failures_before_failing=3)
        transitions.append(t)
    failing = transitions[-1]
    assert failing is not None
    assert failing.since == T0
    assert health_event_id("x3", "ITMMVT", failing) == health_event_id("x3", "ITMMVT", failing)
    assert health_event_id("x3", "ITMMVT", failing) != health_event_id("x3", "BPCUSTOMER", failing)
    payload = health_payload("x3", "ITMMVT", failing, now=T0 + timedelta(minutes=2))
    assert payload["data"] == {"source": "x3", "resource": "ITMMVT", "state": "failing",
                               "since": "2026-12-02T09:00:00.000Z", "failures": 3, "lastError": "timeout"}  # fmt: skip
    assert load_specs(builtin_spec_paths()).validate("relay/source-health", payload) == []


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "GET https://api.example.com/stock?apikey=s3cret&page=2: HTTP 500",
            "GET https://api.example.com/stock: HTTP 500",
        ),
        ("GET http://user:pw@wms.local:8080/items#x: timeout", "GET http://wms.local:8080/items: timeout"),
        ("HTTP 404 without a URL", "HTTP 404 without a URL"),
    ],
)
def test_error_messages_lose_url_secrets_before_they_reach_subscribers(message: str, expected: str) -> None:
    assert redact_urls(message) == expected
    _, transition = health_step(HealthState(), Failure("http-500", message), T0, failures_before_failing=1)
    assert transition is not None
    assert transition.last_error == expected

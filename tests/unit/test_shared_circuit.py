"""What a breaker takes over from the circuit state another instance saved in a shared store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from relay.deliver.retry import CircuitBreaker, CircuitState, shared_circuit_step

T1 = "2026-11-20T09:00:00.000000Z"
T2 = "2026-11-20T09:00:05.000000Z"


@pytest.mark.parametrize(
    ("local", "stored", "changed_at", "seen", "step"),
    [
        ("closed", "open", T1, None, "open"),  # another instance opened it: open here too
        ("closed", "open", T1, T1, "keep"),  # seen before (and then closed here by a success): not undone
        ("open", "open", T2, T1, "keep"),
        ("half-open", "open", T2, T1, "keep"),
        ("open", "closed", T2, T1, "close"),  # another instance's probe succeeded
        ("half-open", "closed", T2, T1, "close"),
        ("open", "closed", T1, T1, "keep"),  # our own opening is newer than what is stored
        ("closed", "closed", T2, T1, "keep"),
        ("closed", None, None, None, "keep"),  # nothing stored yet
    ],
)
def test_shared_circuit_step(
    local: CircuitState, stored: str | None, changed_at: str | None, seen: str | None, step: str
) -> None:
    assert shared_circuit_step(local, stored, changed_at, seen) == step


def test_trip_opens_a_closed_breaker_for_its_cooldown_and_leaves_an_open_one() -> None:
    now = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    breaker = CircuitBreaker(failure_threshold=5, cooldown_s=30)
    breaker.trip(now)
    assert breaker.state == "open"
    assert not breaker.allow(now + timedelta(seconds=29))
    breaker.trip(now + timedelta(seconds=29))  # already open: the cooldown still counts from the first
    assert breaker.allow(now + timedelta(seconds=30))  # half-open: one probe
    assert breaker.state == "half-open"

"""ClockWatch: wall-clock steps noticed against the monotonic clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relay.deliver.clock import ClockWatch

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_steady_progress_is_not_a_step() -> None:
    watch = ClockWatch(T0, 100.0)
    assert watch.check(T0 + timedelta(seconds=5), 105.0) == 0.0
    assert watch.check(T0 + timedelta(seconds=6.5), 106.0) == 0.0  # 0.5 s of jitter is below the threshold


def test_steps_are_reported_once_with_their_sign() -> None:
    watch = ClockWatch(T0, 100.0)
    assert watch.check(T0 - timedelta(hours=1) + timedelta(seconds=1), 101.0) == -3600.0
    assert watch.check(T0 - timedelta(hours=1) + timedelta(seconds=2), 102.0) == 0.0
    assert watch.check(T0 + timedelta(minutes=10), 103.0) == 3600.0 + 600.0 - 2.0 - 1.0


def test_slow_drift_never_adds_up_to_a_step() -> None:
    watch = ClockWatch(T0, 0.0)
    wall = T0
    for second in range(1, 100):
        wall += timedelta(seconds=1.1)  # NTP slewing: 10 % fast, but never 2 s between two looks
        assert watch.check(wall, float(second)) == 0.0


def test_steady_follows_the_monotonic_clock_only() -> None:
    watch = ClockWatch(T0, 50.0)
    watch.check(T0 - timedelta(hours=3), 51.0)
    assert watch.steady(60.0) == T0 + timedelta(seconds=10)


def test_shift_since_moves_what_was_still_waiting() -> None:
    now = T0
    # Forward an hour: only what lay after the old now (an hour ago) keeps its delay.
    assert ClockWatch.shift_since(now, 3600.0) == T0 - timedelta(hours=1)
    # Back an hour: everything after the new now, including what was due by the old clock.
    assert ClockWatch.shift_since(now, -3600.0) == T0

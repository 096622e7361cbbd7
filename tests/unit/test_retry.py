"""Delivery policy: retry decisions, jitter, circuit breaker and token bucket, all with time passed in."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.deliver.retry import (
    AttemptOutcome,
    CircuitBreaker,
    Decision,
    TokenBucket,
    decide,
    describe,
    jittered,
    parse_retry_after,
    shared_rate_batch,
    shared_rate_wait_s,
)

NOW = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)
SCHEDULE_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
DAY_S = 86400.0


def _decide(
    outcome: AttemptOutcome,
    attempt: int = 1,
    *,
    age_s: float = 0.0,
    schedule_s: tuple[float, ...] = SCHEDULE_S,
    max_age_s: float = 3 * DAY_S,
    cap_s: float = 3600,
) -> Decision:
    return decide(
        outcome,
        attempt=attempt,
        now=NOW,
        created_at=NOW - timedelta(seconds=age_s),
        schedule_s=schedule_s,
        max_age_s=max_age_s,
        rng=random.Random(7),
        retry_after_cap_s=cap_s,
    )


def _delay_s(decision: Decision) -> float:
    assert decision.next_attempt_at is not None
    return (decision.next_attempt_at - NOW).total_seconds()


# ------------------------------------------------------------------------------------------ decide


@dataclass(frozen=True)
class Case:
    outcome: AttemptOutcome
    attempt: int
    action: str
    reason: str
    delay_s: tuple[float, float] | None = None  # inclusive bounds for a retry
    age_s: float = 0.0
    cap_s: float = 3600


HTTP_DATE_IN_2_MIN = "Mon, 02 Mar 2026 12:02:00 GMT"
HTTP_DATE_PAST = "Mon, 02 Mar 2026 11:00:00 GMT"

CASES = {
    "200": Case(AttemptOutcome(status=200), 1, "delivered", "HTTP 200"),
    "201": Case(AttemptOutcome(status=201), 3, "delivered", "HTTP 201"),
    "204 on the last attempt": Case(AttemptOutcome(status=204), 99, "delivered", "HTTP 204"),
    "299": Case(AttemptOutcome(status=299), 1, "delivered", "HTTP 299"),
    "410 disables": Case(AttemptOutcome(status=410), 2, "disable", "410 Gone: subscriber disabled"),
    "429 with seconds": Case(AttemptOutcome(status=429, retry_after="120"), 1, "retry", "HTTP 429", (120, 120)),
    "429 with an HTTP-date": Case(
        AttemptOutcome(status=429, retry_after=HTTP_DATE_IN_2_MIN), 1, "retry", "HTTP 429", (120, 120)
    ),
    "503 with a past date retries now": Case(
        AttemptOutcome(status=503, retry_after=HTTP_DATE_PAST), 2, "retry", "HTTP 503", (0, 0)
    ),
    "503 with seconds beyond the schedule delay": Case(
        AttemptOutcome(status=503, retry_after="900"), 1, "retry", "HTTP 503", (900, 900)
    ),
    "503 with garbage falls back to the schedule": Case(
        AttemptOutcome(status=503, retry_after="soon"), 2, "retry", "HTTP 503", (240, 360)
    ),
    "503 with negative seconds falls back": Case(
        AttemptOutcome(status=503, retry_after="-5"), 1, "retry", "HTTP 503", (4, 6)
    ),
    "429 Retry-After capped": Case(
        AttemptOutcome(status=429, retry_after="86400"), 1, "retry", "HTTP 429", (600, 600), cap_s=600
    ),
    "500 Retry-After ignored": Case(AttemptOutcome(status=500, retry_after="3000"), 1, "retry", "HTTP 500", (4, 6)),
    "500 first attempt": Case(AttemptOutcome(status=500), 1, "retry", "HTTP 500", (4, 6)),
    "500 third attempt": Case(AttemptOutcome(status=500), 3, "retry", "HTTP 500", (1440, 2160)),
    "400 is retried too": Case(AttemptOutcome(status=400), 1, "retry", "HTTP 400", (4, 6)),
    "timeout": Case(AttemptOutcome(error="timeout"), 2, "retry", "timeout", (240, 360)),
    "connection refused": Case(AttemptOutcome(error="connection refused"), 1, "retry", "connection refused", (4, 6)),
    "no answer at all": Case(AttemptOutcome(), 1, "retry", "no answer", (4, 6)),
    "301 is not followed": Case(AttemptOutcome(status=301), 1, "retry", "HTTP 301 (redirect not followed)", (4, 6)),
    "308 is not followed": Case(AttemptOutcome(status=308), 2, "retry", "HTTP 308 (redirect not followed)", (240, 360)),
    "last scheduled retry": Case(AttemptOutcome(status=500), 7, "retry", "HTTP 500", (28800, 43200)),
    "past the schedule": Case(AttemptOutcome(status=500), 8, "dead", "HTTP 500 after 8 attempts"),
    "past the schedule with Retry-After": Case(
        AttemptOutcome(status=503, retry_after="1"), 8, "dead", "HTTP 503 after 8 attempts"
    ),
    "timeout past the schedule": Case(AttemptOutcome(error="timeout"), 8, "dead", "timeout after 8 attempts"),
    "past max age": Case(
        AttemptOutcome(status=500), 3, "dead", "HTTP 500 after 3 attempts (max age 259200s reached)", age_s=3 * DAY_S
    ),
    "timeout past max age": Case(
        AttemptOutcome(error="timeout"), 3, "dead", "timeout after 3 attempts (max age", age_s=3 * DAY_S - 60
    ),
    "Retry-After past max age": Case(
        AttemptOutcome(status=429, retry_after="3600"),
        1,
        "dead",
        "HTTP 429 after 1 attempt (max age",
        age_s=3 * DAY_S - 60,
    ),
    "just inside max age": Case(
        AttemptOutcome(status=429, retry_after="60"), 1, "retry", "HTTP 429", (60, 60), age_s=3 * DAY_S - 60
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_decide(case: Case) -> None:
    decision = _decide(case.outcome, case.attempt, age_s=case.age_s, cap_s=case.cap_s)
    assert decision.action == case.action
    assert decision.reason.startswith(case.reason)
    if case.delay_s is None:
        assert decision.next_attempt_at is None
    else:
        low, high = case.delay_s
        assert low <= _delay_s(decision) <= high


def test_decide_honours_retry_after_without_jitter() -> None:
    delays = {
        _delay_s(
            decide(
                AttemptOutcome(status=429, retry_after="30"),
                attempt=1,
                now=NOW,
                created_at=NOW,
                schedule_s=SCHEDULE_S,
                max_age_s=DAY_S,
                rng=random.Random(seed),
            )
        )
        for seed in range(20)
    }
    assert delays == {30.0}


def test_decide_jitters_schedule_delays_apart() -> None:
    delays = {
        _delay_s(
            decide(
                AttemptOutcome(status=500),
                attempt=2,
                now=NOW,
                created_at=NOW,
                schedule_s=SCHEDULE_S,
                max_age_s=DAY_S,
                rng=random.Random(seed),
            )
        )
        for seed in range(20)
    }
    assert len(delays) == 20
    assert all(240 <= d <= 360 for d in delays)


def test_decide_with_an_empty_schedule_gives_up_after_the_first_attempt() -> None:
    decision = _decide(AttemptOutcome(error="timeout"), 1, schedule_s=())
    assert decision == Decision("dead", "timeout after 1 attempt")


def test_decide_refuses_nonsense_arguments() -> None:
    with pytest.raises(ValueError, match="attempt counts from 1"):
        _decide(AttemptOutcome(status=500), 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(
            AttemptOutcome(status=500),
            attempt=1,
            now=datetime(2026, 1, 1),
            created_at=NOW,
            schedule_s=SCHEDULE_S,
            max_age_s=DAY_S,
            rng=random.Random(1),
        )


@pytest.mark.parametrize(
    ("outcome", "text"),
    [
        (AttemptOutcome(status=503), "HTTP 503"),
        (AttemptOutcome(status=302), "HTTP 302 (redirect not followed)"),
        (AttemptOutcome(error="timeout"), "timeout"),
        (AttemptOutcome(), "no answer"),
    ],
)
def test_describe(outcome: AttemptOutcome, text: str) -> None:
    assert describe(outcome) == text


# ------------------------------------------------------------------------------------------ Retry-After


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("0", 0.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        (HTTP_DATE_IN_2_MIN, 120.0),
        ("Mon, 02 Mar 2026 12:00:30 -0000", 30.0),
        (HTTP_DATE_PAST, 0.0),
        ("-5", None),
        ("1.5", None),
        ("", None),
        ("soon", None),
        ("²", None),
        ("Mon, 99 Foo 2026 12:00:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


@given(st.text())
def test_parse_retry_after_never_raises(value: str) -> None:
    result = parse_retry_after(value, NOW)
    assert result is None or result >= 0


# ------------------------------------------------------------------------------------------ jitter


@given(
    delay_s=st.floats(min_value=0, max_value=1e7, allow_nan=False),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_jitter_stays_within_twenty_percent(delay_s: float, seed: int) -> None:
    value = jittered(delay_s, random.Random(seed))
    assert delay_s * 0.8 - 1e-9 <= value <= delay_s * 1.2 + 1e-9


def test_jitter_spreads_over_the_whole_band() -> None:
    rng = random.Random(3)
    values = [jittered(100.0, rng) for _ in range(2000)]
    assert min(values) < 82
    assert max(values) > 118


# ------------------------------------------------------------------------------------------ circuit breaker


def _at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def _state(breaker: CircuitBreaker) -> str:
    # A call, not an attribute: the state changes under calls that the type checker cannot see.
    return breaker.state


def _opened_breaker(threshold: int = 3, cooldown_s: float = 10.0) -> CircuitBreaker:
    breaker = CircuitBreaker(failure_threshold=threshold, cooldown_s=cooldown_s)
    for _ in range(threshold):
        breaker.record_failure(_at(0))
    return breaker


def test_breaker_stays_closed_below_the_threshold_and_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10)
    breaker.record_failure(_at(0))
    breaker.record_failure(_at(1))
    assert (_state(breaker), breaker.consecutive_failures) == ("closed", 2)
    breaker.record_success(_at(2))
    breaker.record_failure(_at(3))
    breaker.record_failure(_at(4))
    assert (_state(breaker), breaker.consecutive_failures, breaker.opened_at) == ("closed", 2, None)
    assert breaker.allow(_at(5))


def test_breaker_opens_at_the_threshold_and_refuses_until_the_cooldown() -> None:
    breaker = _opened_breaker()
    assert _state(breaker) == "open"
    assert breaker.opened_at == _at(0)
    assert breaker.consecutive_failures == 3
    assert not breaker.allow(_at(0))
    assert not breaker.allow(_at(9.9))
    assert _state(breaker) == "open"


def test_breaker_half_open_allows_exactly_one_probe() -> None:
    breaker = _opened_breaker()
    assert breaker.allow(_at(10))
    assert _state(breaker) == "half-open"
    assert not breaker.allow(_at(10))
    assert not breaker.allow(_at(15))
    breaker.record_success(_at(16))
    assert _state(breaker) == "closed"
    assert breaker.consecutive_failures == 0
    assert breaker.opened_at is None
    assert all(breaker.allow(_at(16)) for _ in range(5))


def test_breaker_state_is_evaluated_against_the_latest_time_given() -> None:
    breaker = _opened_breaker()
    assert _state(breaker) == "open"
    breaker.allow(_at(5))
    assert _state(breaker) == "open"
    breaker.allow(_at(12))
    assert _state(breaker) == "half-open"


def test_a_failed_probe_reopens_with_the_cooldown_doubled_up_to_ten_times() -> None:
    breaker = _opened_breaker(cooldown_s=10)
    t = 0.0
    cooldowns = []
    for _ in range(6):
        cooldown_s = breaker.cooldown_s
        cooldowns.append(cooldown_s)
        assert not breaker.allow(_at(t + cooldown_s - 0.1))
        t += cooldown_s
        assert breaker.allow(_at(t))
        breaker.record_failure(_at(t))
        assert _state(breaker) == "open"
        assert breaker.opened_at == _at(t)
    assert cooldowns == [10, 20, 40, 80, 100, 100]
    assert breaker.allow(_at(t + 100))
    breaker.record_success(_at(t + 100))
    assert breaker.cooldown_s == 10


def test_a_released_probe_can_be_granted_again() -> None:
    breaker = _opened_breaker()
    assert breaker.allow(_at(10))
    breaker.release_probe()
    assert breaker.allow(_at(11))
    assert not breaker.allow(_at(11))


def test_a_probe_without_a_result_is_presumed_lost_after_another_cooldown() -> None:
    breaker = _opened_breaker(cooldown_s=10)
    assert breaker.allow(_at(10))
    assert not breaker.allow(_at(19.9))
    assert breaker.allow(_at(20))
    assert not breaker.allow(_at(20))


def test_failures_of_attempts_in_flight_while_open_do_not_extend_the_cooldown() -> None:
    breaker = _opened_breaker(cooldown_s=10)
    breaker.record_failure(_at(5))
    assert breaker.opened_at == _at(0)
    assert breaker.cooldown_s == 10
    assert breaker.consecutive_failures == 4
    assert breaker.allow(_at(10))


def test_breaker_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError, match="cooldown_s"):
        CircuitBreaker(cooldown_s=0)


# ------------------------------------------------------------------------------------------ token bucket


def test_token_bucket_starts_full_then_limits_to_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=5)
    assert [bucket.try_take(100.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.delay_until_available(100.0) == pytest.approx(0.1)
    assert not bucket.try_take(100.05)
    assert bucket.try_take(100.1)


@pytest.mark.parametrize("start", [0.0, 987_654.321])
@pytest.mark.parametrize(("rate_per_s", "burst"), [(2.0, None), (10.0, 3.0), (0.5, 1.0), (100.0, 20.0), (3.0, 7.5)])
def test_token_bucket_rate_over_simulated_time(rate_per_s: float, burst: float | None, start: float) -> None:
    bucket = TokenBucket(rate_per_s, burst)
    capacity = burst if burst is not None else max(1.0, rate_per_s)
    now = start
    taken = 0
    # A greedy sender that sleeps exactly as long as the bucket says, for 60 simulated seconds; a large
    # clock reading (a monotonic clock after days of uptime) is where rounding could stall it.
    while now < start + 60.0:
        if bucket.try_take(now):
            taken += 1
        else:
            wait = bucket.delay_until_available(now)
            assert wait > 0
            now += wait
    assert int(capacity) + rate_per_s * 60 - 1 <= taken <= capacity + rate_per_s * 60 + 1


def test_token_bucket_does_not_save_more_than_the_burst() -> None:
    bucket = TokenBucket(rate_per_s=1, burst=3)
    assert all(bucket.try_take(0.0) for _ in range(3))
    assert sum(bucket.try_take(1000.0) for _ in range(10)) == 3


def test_token_bucket_refund_and_clock_going_backwards() -> None:
    bucket = TokenBucket(rate_per_s=1, burst=2)
    assert bucket.try_take(10.0)
    assert bucket.try_take(10.0)
    bucket.refund(1)
    assert bucket.try_take(10.0)
    assert not bucket.try_take(9.0)
    assert bucket.delay_until_available(9.0) == pytest.approx(1.0)
    bucket.refund(100)
    assert bucket.tokens == 2


def test_token_bucket_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        TokenBucket(0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1, burst=0.5)


@pytest.mark.parametrize(
    ("rate_per_s", "free_slots", "expected"),
    [
        (10.0, 8, 1),  # slow limits: one token per take
        (0.5, 8, 1),
        (100.0, 8, 8),  # a tenth of a second's worth, capped by the free slots
        (100.0, 50, 10),
        (1000.0, 64, 64),
        (25.0, 8, 3),  # rounded up
        (10.0, 0, 0),  # no free slot: nothing to take
    ],
)
def test_shared_rate_batch_takes_a_tenth_of_a_second_within_the_free_slots(
    rate_per_s: float, free_slots: int, expected: int
) -> None:
    assert shared_rate_batch(rate_per_s, free_slots) == expected


@pytest.mark.parametrize(
    ("tokens_left", "rate_per_s", "expected_s"),
    [
        (0.0, 10.0, 0.1),
        (0.5, 10.0, 0.05),
        (0.75, 2.0, 0.125),
        (1.0, 10.0, 0.0),  # a whole token is there
        (3.0, 10.0, 0.0),
    ],
)
def test_shared_rate_wait_is_the_time_to_refill_one_whole_token(
    tokens_left: float, rate_per_s: float, expected_s: float
) -> None:
    assert shared_rate_wait_s(tokens_left, rate_per_s) == pytest.approx(expected_s)

"""Delivery policy: retry decisions, circuit breaker and rate limiter.

Everything here is pure: time comes in as an argument, nothing sleeps, nothing does I/O. The dispatcher
asks, then acts on the answer.
"""

from __future__ import annotations

import email.utils
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

__all__ = [
    "AttemptOutcome",
    "CircuitBreaker",
    "Decision",
    "TokenBucket",
    "decide",
    "describe",
    "jittered",
    "parse_retry_after",
    "shared_circuit_step",
    "shared_rate_batch",
    "shared_rate_wait_s",
]

_DELTA_SECONDS = re.compile(r"[0-9]+")
_RETRY_AFTER_STATUSES = frozenset({429, 503})

CircuitState = Literal["closed", "open", "half-open"]


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What one delivery attempt got.

    Attributes:
        status: the HTTP status, or None when no HTTP answer came (timeout, refused connection, …).
        error: what went wrong without an answer, e.g. "timeout" or "connection refused".
        retry_after: the raw `Retry-After` header of the answer, if any.
        permanent: the request could not be sent and never will be (a header value no HTTP request can
            carry): retrying cannot help.
    """

    status: int | None = None
    error: str | None = None
    retry_after: str | None = None
    permanent: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """What the dispatcher does next with a delivery.

    Attributes:
        action: `delivered`; `retry` at `next_attempt_at`; `dead` (give up); `disable` the subscriber.
        reason: short human text for the attempt record and logs.
        next_attempt_at: when to try again (UTC); set only for `retry`.
    """

    action: Literal["delivered", "retry", "dead", "disable"]
    reason: str
    next_attempt_at: datetime | None = None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Read a `Retry-After` header value.

    Args:
        value: delta-seconds (`120`) or an HTTP-date (`Wed, 21 Oct 2015 07:28:00 GMT`); None when absent.
        now: the current time, timezone-aware; an HTTP-date is measured from it.

    Returns:
        Seconds to wait (0 for a date already past), or None when the value is absent, negative or not
        understood.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # RFC 9110 HTTP-dates are always GMT; parsedate_to_datetime leaves "-0000" naive.
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def jittered(delay_s: float, rng: random.Random, jitter: float = 0.2) -> float:
    """Spread a delay so that deliveries which failed together do not all retry at the same instant.

    Args:
        delay_s: the nominal delay in seconds.
        rng: the random source (seeded in tests).
        jitter: the largest relative change, 0.2 for ±20 %.

    Returns:
        A delay drawn uniformly from `[delay_s × (1 - jitter), delay_s × (1 + jitter)]`.
    """
    return delay_s * (1.0 + rng.uniform(-jitter, jitter))


def describe(outcome: AttemptOutcome) -> str:
    """Short human text for an outcome.

    Args:
        outcome: the attempt's outcome.

    Returns:
        e.g. `HTTP 503`, `HTTP 301 (redirect not followed)`, `timeout`, or `no answer` when the outcome
        holds neither a status nor an error.
    """
    if outcome.status is not None:
        if 300 <= outcome.status < 400:
            return f"HTTP {outcome.status} (redirect not followed)"
        return f"HTTP {outcome.status}"
    return outcome.error or "no answer"


def _attempts(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


def decide(
    outcome: AttemptOutcome,
    *,
    attempt: int,
    now: datetime,
    created_at: datetime,
    schedule_s: Sequence[float],
    max_age_s: float,
    rng: random.Random,
    retry_after_cap_s: float = 3600,
) -> Decision:
    """Decide what follows a delivery attempt.

    Rules, in order: any 2xx is delivered; 410 disables the subscriber; a permanent failure (a request
    that can never be sent) is dead at once; once `attempt` exceeds the schedule the delivery is dead; 429
    or 503 with a usable `Retry-After` retries exactly then (capped at `retry_after_cap_s`, no jitter);
    anything else (other statuses including redirects, which are never followed, and errors such as
    timeouts) retries after `schedule_s[attempt - 1]` ±20 %. A retry that would fall after
    `created_at + max_age_s` is dead instead.

    Args:
        outcome: what this attempt got.
        attempt: attempts made so far including this one (1 after the first).
        now: the current time, timezone-aware UTC.
        created_at: when the delivery was created (its age counts from here).
        schedule_s: the delay before each retry, in seconds.
        max_age_s: the longest a delivery may keep being retried, from `created_at`.
        rng: the random source for jitter.
        retry_after_cap_s: the longest `Retry-After` honoured.

    Returns:
        The decision; `next_attempt_at` is set only when the action is `retry`.

    Raises:
        ValueError: `attempt` is below 1 or `now` is naive.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    status = outcome.status
    if status is not None and 200 <= status < 300:
        return Decision("delivered", f"HTTP {status}")
    if status == 410:
        return Decision("disable", "410 Gone: subscriber disabled")
    what = describe(outcome)
    if outcome.permanent:
        return Decision("dead", f"{what} (not retried: it cannot succeed)")
    if attempt > len(schedule_s):
        return Decision("dead", f"{what} after {_attempts(attempt)}")
    retry_after_s = parse_retry_after(outcome.retry_after, now) if status in _RETRY_AFTER_STATUSES else None
    if retry_after_s is not None:
        delay_s = min(retry_after_s, retry_after_cap_s)
        reason = f"{what}, Retry-After {delay_s:g}s"
    else:
        delay_s = jittered(schedule_s[attempt - 1], rng)
        reason = what
    next_attempt_at = now + timedelta(seconds=delay_s)
    if next_attempt_at > created_at + timedelta(seconds=max_age_s):
        return Decision("dead", f"{what} after {_attempts(attempt)} (max age {max_age_s:g}s reached)")
    return Decision("retry", reason, next_attempt_at)


class CircuitBreaker:
    """Per-subscriber circuit breaker: stop sending to a failing endpoint, then probe it with one request.

    `closed` lets everything through. `failure_threshold` consecutive failures open it; while `open`,
    nothing goes until the cooldown has passed, then it turns `half-open` and `allow` grants exactly one
    probe. The probe's success closes the circuit; its failure opens it again with the cooldown doubled
    (at most 10 × `cooldown_s`). A success resets the cooldown. Time is passed in; `state` reflects the
    latest `now` the breaker was given.
    """

    def __init__(self, failure_threshold: int = 5, cooldown_s: float = 30.0) -> None:
        """Create a closed breaker.

        Args:
            failure_threshold: consecutive failures that open the circuit (at least 1).
            cooldown_s: how long the circuit stays open the first time (positive).

        Raises:
            ValueError: a parameter is out of range.
        """
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown_s <= 0:
            raise ValueError("cooldown_s must be positive")
        self.failure_threshold = failure_threshold
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = 10 * cooldown_s
        self._cooldown_s = cooldown_s
        self._consecutive_failures = 0
        self._opened_at: datetime | None = None
        self._probe_granted_at: datetime | None = None
        self._last_now: datetime | None = None

    @property
    def cooldown_s(self) -> float:
        """The current cooldown: `cooldown_s`, doubled after each failed probe, capped at 10×."""
        return self._cooldown_s

    @property
    def consecutive_failures(self) -> int:
        """Failures recorded since the last success."""
        return self._consecutive_failures

    @property
    def opened_at(self) -> datetime | None:
        """When the circuit last opened; None while closed."""
        return self._opened_at

    @property
    def state(self) -> CircuitState:
        """`closed`, `open`, or `half-open` (open and cooled down, as of the latest `now` given)."""
        if self._opened_at is None:
            return "closed"
        if self._last_now is not None and self._cooled_down(self._last_now):
            return "half-open"
        return "open"

    def _cooled_down(self, now: datetime) -> bool:
        assert self._opened_at is not None
        return (now - self._opened_at).total_seconds() >= self._cooldown_s

    def _see(self, now: datetime) -> None:
        if self._last_now is None or now > self._last_now:
            self._last_now = now

    def allow(self, now: datetime) -> bool:
        """Whether an attempt may start now.

        Closed: always. Open: not until the cooldown has passed. Half-open: True exactly once (that caller
        sends the probe), then False until the probe's result is recorded, or until `release_probe` is
        called because nothing was sent. A probe whose result is still missing after another full cooldown
        is presumed lost (e.g. its task was cancelled) and a new one is granted, so the breaker cannot
        stay stuck half-open.

        Args:
            now: the current time.
        """
        self._see(now)
        if self._opened_at is None:
            return True
        if not self._cooled_down(now):
            return False
        if self._probe_granted_at is not None and (now - self._probe_granted_at).total_seconds() < self._cooldown_s:
            return False
        self._probe_granted_at = now
        return True

    def release_probe(self) -> None:
        """Give back a half-open probe granted by `allow` that was not used (nothing was due to send)."""
        self._probe_granted_at = None

    def probe_started(self) -> None:
        """Kept for callers that mark the probe explicitly; `allow` already reserves it, so this does nothing."""

    def record_success(self, now: datetime) -> None:
        """An attempt succeeded: close the circuit and reset the failure count and cooldown.

        Args:
            now: when the result arrived.
        """
        self._see(now)
        self._consecutive_failures = 0
        self._cooldown_s = self.base_cooldown_s
        self._opened_at = None
        self._probe_granted_at = None

    def record_failure(self, now: datetime) -> None:
        """An attempt failed: count it; open at the threshold, re-open (cooldown doubled) on a failed probe.

        Failures of attempts that were already in flight when the circuit opened only add to the count.

        Args:
            now: when the result arrived.
        """
        self._see(now)
        self._consecutive_failures += 1
        if self._opened_at is None:
            if self._consecutive_failures >= self.failure_threshold:
                self._open(now)
        elif self._cooled_down(now):
            self._cooldown_s = min(self._cooldown_s * 2, self.max_cooldown_s)
            self._open(now)

    def trip(self, now: datetime) -> None:
        """Open now, with the current cooldown, because another instance opened the circuit (no effect if open)."""
        self._see(now)
        if self._opened_at is None:
            self._open(now)

    def _open(self, now: datetime) -> None:
        self._opened_at = now
        self._probe_granted_at = None


def shared_circuit_step(
    local: CircuitState, stored: str | None, stored_changed_at: str | None, seen_changed_at: str | None
) -> Literal["open", "close", "keep"]:
    """What this instance's breaker takes over from the circuit state saved in a shared store (pure).

    Only a change not seen before counts (`stored_changed_at` differs from the last one looked at), so the
    breaker's own transitions, saved a moment later, are never undone: another instance's opening opens a closed
    breaker here, its successful probe closes an open or half-open one.
    """
    if stored_changed_at is None or stored_changed_at == seen_changed_at:
        return "keep"
    if stored == "open" and local == "closed":
        return "open"
    if stored == "closed" and local != "closed":
        return "close"
    return "keep"


#: How often, at most, the instances together take tokens from a subscriber's shared bucket per second when its
#: rate is high: a take is a database write, so a fast limit is taken a tenth of a second's worth at a time.
SHARED_RATE_TAKES_PER_S = 10.0


def shared_rate_batch(rate_per_s: float, free_slots: int) -> int:
    """How many tokens to take at once from a bucket shared across instances.

    About a tenth of a second's worth (at least one) so the cost per delivery stays low at high rates, never
    more than the free in-flight slots: tokens an instance holds are not available to the others.

    Args:
        rate_per_s: the subscriber's `rate_limit`, deliveries per second (positive).
        free_slots: in-flight slots free on this instance.
    """
    return max(0, min(free_slots, max(1, math.ceil(rate_per_s / SHARED_RATE_TAKES_PER_S))))


def shared_rate_wait_s(tokens_left: float, rate_per_s: float) -> float:
    """Seconds until a shared bucket left with `tokens_left` holds a whole token again (0: now).

    Args:
        tokens_left: the tokens the bucket held after the last take (a fraction when none was granted).
        rate_per_s: the subscriber's `rate_limit`, deliveries per second (positive).
    """
    return max(0.0, (1.0 - tokens_left) / rate_per_s)


class TokenBucket:
    """Rate limiter: `rate_per_s` tokens a second, at most `burst` saved up; starts full.

    Time is a monotonic clock reading in seconds, passed in (`time.monotonic()` in production).
    """

    def __init__(self, rate_per_s: float, burst: float | None = None) -> None:
        """Create a full bucket.

        Args:
            rate_per_s: tokens added per second (positive).
            burst: the most tokens held at once (at least 1); default `max(1, rate_per_s)`.

        Raises:
            ValueError: a parameter is out of range.
        """
        if not rate_per_s > 0:
            raise ValueError("rate_per_s must be positive")
        if burst is not None and not burst >= 1:
            raise ValueError("burst must be at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst if burst is not None else max(1.0, rate_per_s)
        self.tokens = self.burst
        self._updated_at: float | None = None

    def _refill(self, now_monotonic: float) -> None:
        if self._updated_at is not None and now_monotonic > self._updated_at:
            self.tokens = min(self.burst, self.tokens + (now_monotonic - self._updated_at) * self.rate_per_s)
        if self._updated_at is None or now_monotonic > self._updated_at:
            self._updated_at = now_monotonic

    def _slack(self, now_monotonic: float) -> float:
        # Float rounding can leave 0.99999999 tokens after waiting exactly the advised delay, and the next
        # advice may be too small to move a large clock reading: a caller sleeping as told would spin.
        return 1e-9 + 4 * self.rate_per_s * math.ulp(now_monotonic)

    def try_take(self, now_monotonic: float) -> bool:
        """Take one token if there is one.

        Args:
            now_monotonic: the current monotonic clock reading, seconds.

        Returns:
            True when a token was taken (the caller may proceed).
        """
        self._refill(now_monotonic)
        if self.tokens >= 1 - self._slack(now_monotonic):
            self.tokens = max(0.0, self.tokens - 1)
            return True
        return False

    def refund(self, count: float) -> None:
        """Give back tokens taken for work that did not happen (never above `burst`).

        Args:
            count: how many tokens to return; negative counts are ignored.
        """
        self.tokens = min(self.burst, self.tokens + max(0.0, count))

    def delay_until_available(self, now_monotonic: float) -> float:
        """Seconds until `try_take` can succeed (0 when a token is there now); takes nothing.

        Args:
            now_monotonic: the current monotonic clock reading, seconds.
        """
        self._refill(now_monotonic)
        return 0.0 if self.tokens >= 1 - self._slack(now_monotonic) else (1 - self.tokens) / self.rate_per_s

"""Retry policy, circuit breaker and rate limiter: pure, with time passed in (no sleeping, no I/O)."""

from __future__ import annotations

import email.utils
import random
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
]


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What one attempt got: an HTTP status, or an error (timeout, refused connection) and no status."""

    status: int | None = None
    error: str | None = None
    retry_after: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["delivered", "retry", "dead", "disable"]
    reason: str
    next_attempt_at: datetime | None = None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta-seconds or an HTTP date); None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def jittered(delay_s: float, rng: random.Random, jitter: float = 0.2) -> float:
    """`delay_s` moved uniformly within ±`jitter` (spreads retries of many deliveries apart)."""
    return delay_s * (1 + rng.uniform(-jitter, jitter))


def describe(outcome: AttemptOutcome) -> str:
    """Short text for an outcome: `HTTP 503`, `timeout`, `connection failed: …`."""
    if outcome.status is not None:
        if 300 <= outcome.status < 400:
            return f"HTTP {outcome.status} (redirect not followed)"
        return f"HTTP {outcome.status}"
    return outcome.error or "no answer"


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
    """What to do after attempt number `attempt` (1 = the first) got `outcome`.

    2xx → delivered; 410 → disable the subscriber; 429/503 with Retry-After → retry then (capped);
    anything else → retry after the schedule's next delay ±20 %; past the schedule or `max_age_s` → dead.
    """
    status = outcome.status
    if status is not None and 200 <= status < 300:
        return Decision("delivered", f"HTTP {status}")
    if status == 410:
        return Decision("disable", "410 Gone: subscriber disabled")
    what = describe(outcome)
    delay: float | None = None
    if status in (429, 503):
        retry_after = parse_retry_after(outcome.retry_after, now)
        if retry_after is not None:
            delay = min(retry_after, retry_after_cap_s)
    if delay is None:
        if attempt > len(schedule_s):
            return Decision("dead", f"{what} after {attempt} attempt{'s' if attempt != 1 else ''}")
        delay = jittered(schedule_s[attempt - 1], rng)
    elif attempt > len(schedule_s):
        return Decision("dead", f"{what} after {attempt} attempts")
    next_at = now + timedelta(seconds=delay)
    if next_at > created_at + timedelta(seconds=max_age_s):
        return Decision("dead", f"{what} after {attempt} attempt{'s' if attempt != 1 else ''} (max age reached)")
    return Decision("retry", what, next_at)


class CircuitBreaker:
    """Stops attempts to a failing subscriber; after a cooldown, one probe decides (half-open)."""

    def __init__(self, failure_threshold: int = 5, cooldown_s: float = 30.0) -> None:
        self.failure_threshold = failure_threshold
        self.base_cooldown_s = cooldown_s
        self.cooldown_s = cooldown_s
        self.consecutive_failures = 0
        self.opened_at: datetime | None = None
        self._state: Literal["closed", "open", "half-open"] = "closed"
        self._probe_out = False

    @property
    def state(self) -> Literal["closed", "open", "half-open"]:
        return self._state

    def allow(self, now: datetime) -> bool:
        """Whether an attempt may start now (in half-open, exactly one probe until its result)."""
        if self._state == "closed":
            return True
        if self._state == "open":
            assert self.opened_at is not None
            if (now - self.opened_at).total_seconds() < self.cooldown_s:
                return False
            self._state = "half-open"
            self._probe_out = False
        return not self._probe_out

    def probe_started(self) -> None:
        """The half-open probe was sent (allow() may be asked without sending anything)."""
        if self._state == "half-open":
            self._probe_out = True

    def record_success(self, now: datetime) -> None:
        self._state = "closed"
        self.consecutive_failures = 0
        self.cooldown_s = self.base_cooldown_s
        self.opened_at = None
        self._probe_out = False

    def record_failure(self, now: datetime) -> None:
        self.consecutive_failures += 1
        if self._state == "half-open":
            self.cooldown_s = min(self.cooldown_s * 2, self.base_cooldown_s * 10)
            self._open(now)
        elif self._state == "closed" and self.consecutive_failures >= self.failure_threshold:
            self._open(now)

    def _open(self, now: datetime) -> None:
        self._state = "open"
        self.opened_at = now
        self._probe_out = False


class TokenBucket:
    """`rate_per_s` tokens a second, up to `burst` saved; time is a monotonic float passed in."""

    def __init__(self, rate_per_s: float, burst: float | None = None) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst if burst is not None else max(1.0, rate_per_s)
        self.tokens = self.burst
        self.updated: float | None = None

    def _refill(self, now: float) -> None:
        if self.updated is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now

    def try_take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def refund(self, count: float) -> None:
        """Give back tokens taken for work that did not happen."""
        self.tokens = min(self.burst, self.tokens + max(0.0, count))

    def delay_until_available(self, now: float) -> float:
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate_per_s

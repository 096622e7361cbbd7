"""Pure rules of source health: when a polled resource is failing, and when it recovered.

A resource turns **failing** after `failures_before_failing` consecutive failed polls, or at once when,
right after a successful poll, it fails with a definite error of a class it did not fail with before (a
404 or a 500 where it used to answer, or used to time out now and then: typical after an ERP upgrade).
Transient classes (timeouts, unreachable, 429, 502/503/504) always wait for the streak. A failing resource
is **recovered** at its next successful poll. Each transition is one `relay/source-health` event; the state
is kept in the store, so a restart does not announce a transition twice. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from relay.events import format_ts, parse_ts

__all__ = [
    "DEFAULT_FAILURES_BEFORE_FAILING",
    "HEALTH_CHANNEL",
    "HEALTH_DOCUMENT_TYPE",
    "TRANSIENT_CLASSES",
    "Failure",
    "HealthState",
    "Transition",
    "error_class",
    "health_event_id",
    "health_payload",
    "health_step",
    "redact_urls",
]

HEALTH_CHANNEL = "relay/source-health"
HEALTH_DOCUMENT_TYPE = "SourceHealth"
DEFAULT_FAILURES_BEFORE_FAILING = 3
TRANSIENT_CLASSES = frozenset({"unavailable", "rate-limited"})
MAX_ERROR_CHARS = 500
_URL_RE = re.compile(r"https?://\S+")


def redact_urls(message: str) -> str:
    """An error message without the user info, query or fragment of the URLs in it: an http-json URL may
    carry an API key there, and `lastError` goes to every subscriber of `relay/source-health`."""

    def bare(match: re.Match[str]) -> str:
        text = match[0]
        url, tail = (text[:-1], text[-1]) if text.endswith((":", ",", ";", ")")) else (text, "")
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}{tail}"

    return _URL_RE.sub(bare, message)


def error_class(status: int | None) -> str:
    """The class of a failed poll from its HTTP status (None: no answer, or an unreadable one).

    `auth` (401, 403), `rate-limited` (429), `unavailable` (no answer, 502, 503, 504), else `http-<status>`.
    """
    if status is None or status in (502, 503, 504):
        return "unavailable"
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate-limited"
    return f"http-{status}"


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed poll: its class (`error_class`) and message."""

    error_class: str
    message: str


@dataclass(frozen=True, slots=True)
class HealthState:
    """Where one resource stands.

    Attributes:
        failing: A failing transition was announced and no recovery since.
        failures: Consecutive failed polls up to now.
        streak_started_at: When the current failure streak began (None without one).
        last_error: The message of the latest failure.
        last_error_class: The class of the latest failure (kept across successes: a new class is news).
        successes: Consecutive successful polls (in memory only: a restart starts at 0).
    """

    failing: bool = False
    failures: int = 0
    streak_started_at: datetime | None = None
    last_error: str | None = None
    last_error_class: str | None = None
    successes: int = 0

    def to_json(self) -> dict[str, Any]:
        """What the store keeps (`successes` is not kept)."""
        return {
            "state": "failing" if self.failing else "ok",
            "failures": self.failures,
            "streakStartedAt": format_ts(self.streak_started_at) if self.streak_started_at else None,
            "lastError": self.last_error,
            "lastErrorClass": self.last_error_class,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> HealthState:
        """The state as stored by `to_json` (None: never stored: a healthy resource)."""
        if not value:
            return cls()
        started = value.get("streakStartedAt")
        return cls(
            failing=value.get("state") == "failing",
            failures=int(value.get("failures") or 0),
            streak_started_at=parse_ts(started) if isinstance(started, str) else None,
            last_error=value.get("lastError"),
            last_error_class=value.get("lastErrorClass"),
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state to announce: `since` is when the failure streak began, or when it recovered."""

    state: Literal["failing", "recovered"]
    since: datetime
    last_error: str | None
    failures: int


def health_step(
    state: HealthState, failure: Failure | None, now: datetime, *, failures_before_failing: int
) -> tuple[HealthState, Transition | None]:
    """The state after one poll (`failure` None: it succeeded) and the transition to announce, if any."""
    if failure is None:
        after = HealthState(last_error_class=state.last_error_class, successes=state.successes + 1)
        if state.failing:
            return after, Transition("recovered", now, state.last_error, state.failures)
        return after, None
    message = redact_urls(failure.message)[:MAX_ERROR_CHARS]
    new_class = (
        state.successes > 0
        and failure.error_class not in TRANSIENT_CLASSES
        and failure.error_class != state.last_error_class
    )
    after = replace(
        state,
        failures=state.failures + 1,
        streak_started_at=state.streak_started_at or now,
        last_error=message,
        last_error_class=failure.error_class,
        successes=0,
    )
    if not state.failing and (after.failures >= failures_before_failing or new_class):
        assert after.streak_started_at is not None
        return replace(after, failing=True), Transition("failing", after.streak_started_at, message, after.failures)
    return after, None


def health_event_id(source: str, resource: str, transition: Transition) -> str:
    """Deterministic: one transition is one event however often it is committed."""
    key = f"{source}\0{resource}\0{transition.state}\0{format_ts(transition.since)}"
    return "health-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def health_payload(
    source: str, resource: str, transition: Transition, *, now: datetime, tenant_id: str | None = None
) -> dict[str, Any]:
    """The `relay/source-health` event (SourceHealth) of one transition."""
    data: dict[str, Any] = {
        "source": source,
        "resource": resource,
        "state": transition.state,
        "since": format_ts(transition.since),
        "failures": transition.failures,
    }
    if transition.last_error is not None:
        data["lastError"] = transition.last_error
    payload: dict[str, Any] = {
        "eventId": health_event_id(source, resource, transition),
        "documentType": HEALTH_DOCUMENT_TYPE,
        "timestamp": format_ts(now),
        "data": data,
    }
    if tenant_id:
        payload["tenantId"] = tenant_id
    return payload

"""Console sessions: who signed in with which token, their CSRF token, and when the session ends.

Sessions live in this process's memory only: a restart signs everyone out (the tokens are the durable
credential; a session is a convenience over one). Policy functions here are pure and unit-tested.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from relay.config import Role

__all__ = ["COOKIE", "SIGNIN_COOKIE", "Session", "SessionStore", "cookie_is_secure", "same_token"]

COOKIE = "relay_console"
# The sign-in form has no session yet: its CSRF token is a random value in this cookie and in the form.
SIGNIN_COOKIE = "relay_console_signin"
MAX_SESSIONS = 10_000  # the oldest are dropped past this: sessions need a valid token, but memory is finite


def same_token(given: str | None, expected: str) -> bool:
    """Whether a submitted CSRF token is the expected one: constant time; nothing missing or empty matches."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def cookie_is_secure(mode: str, *, tls: bool, forwarded_proto: str | None) -> bool:
    """Whether the session cookie gets `Secure`.

    Args:
        mode: `console.secure_cookies`: `true`, `false`, or `auto` (Secure when the browser reached the relay
            over HTTPS: a TLS connection, or `X-Forwarded-Proto: https` from a reverse proxy in front of it).
        tls: the request came over TLS to this listener.
        forwarded_proto: the `X-Forwarded-Proto` header, if any (its first value counts).
    """
    if mode in ("true", "false"):
        return mode == "true"
    first = (forwarded_proto or "").split(",")[0].strip().lower()
    return tls or first == "https"


@dataclass(eq=False)
class Session:
    """One signed-in browser."""

    id: str
    name: str  # the token's name (`ops`, `admin#1`): who operator actions are logged as
    role: Role
    csrf: str
    expires_at: datetime
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) shown once on the next page

    @property
    def can_write(self) -> bool:
        return self.role == "admin"


class SessionStore:
    """Sessions by id, each valid until its fixed expiry (no sliding: a stolen cookie ages out).

    Args:
        ttl_s: how long a session lasts from sign-in.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}

    def create(self, name: str, role: Role, now: datetime) -> Session:
        """A new session for a token that was just checked."""
        self._expire(now)
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        session = Session(
            id=secrets.token_urlsafe(32),
            name=name,
            role=role,
            csrf=secrets.token_urlsafe(32),
            expires_at=now + timedelta(seconds=self.ttl_s),
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None, now: datetime) -> Session | None:
        """The live session of a cookie value; None when unknown or expired (an expired one is forgotten)."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if now >= session.expires_at:
            del self._sessions[session_id]
            return None
        return session

    def end(self, session_id: str) -> None:
        """Sign out."""
        self._sessions.pop(session_id, None)

    def _expire(self, now: datetime) -> None:
        for sid in [sid for sid, s in self._sessions.items() if now >= s.expires_at]:
            del self._sessions[sid]

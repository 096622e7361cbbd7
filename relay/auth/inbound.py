"""Checks the credentials a source sends with a push (basic, bearer, API key, Standard Webhooks), and the
admin API's bearer token with the same code.

Credentials are compared as the exact bytes sent, in constant time; reasons are for logs and never contain
the secrets themselves.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache

from relay.config import ApiKeyAuth, BasicAuth, BearerAuth, NoAuth, StandardWebhooksAuth
from relay.signing import SignatureError, parse_secret, verify

InboundAuthConfig = BasicAuth | BearerAuth | ApiKeyAuth | StandardWebhooksAuth | NoAuth

__all__ = ["authenticate", "check_bearer", "matching_token", "needs_body"]


def needs_body(auth: InboundAuthConfig) -> bool:
    """Whether the check needs the request body (signatures); others run before the body is read."""
    return isinstance(auth, StandardWebhooksAuth)


# Optional whitespace around header values and credentials (RFC 9110 §5.6.3): only ASCII space and tab.
# Python's str.strip() would also drop U+00A0, U+2003, \x1c …, letting a blank-looking value through.
_OWS = " \t"


def _wire_bytes(text: str) -> bytes | None:
    """The bytes a header value arrived as; None when it has none (then it can match nothing)."""
    # aiohttp decodes header bytes as UTF-8 with surrogateescape, so this gives back the exact bytes sent.
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def _any_equal(given: bytes, candidates: Sequence[str]) -> bool:
    # Compare against every candidate so the time taken does not tell which one (or whether one) matched.
    found = False
    for candidate in candidates:
        expected = candidate.encode("utf-8", "surrogatepass")
        # An empty candidate never matches, whatever the configuration let through.
        found |= hmac.compare_digest(given, expected) & bool(expected)
    return found


@lru_cache(maxsize=256)
def _keys(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(parse_secret(s) for s in secrets)


def _credentials(headers: Mapping[str, str], scheme: str) -> bytes | None:
    """The credentials after `<scheme> ` in the Authorization header, as sent; None when absent or empty."""
    value = headers.get("Authorization", "").strip(_OWS)
    name, _, rest = value.partition(" ")
    # isascii first: str.lower() maps some non-ASCII letters onto ASCII ones.
    if not name.isascii() or name.lower() != scheme:
        return None
    credentials = rest.strip(_OWS)
    return _wire_bytes(credentials) if credentials else None


def check_bearer(headers: Mapping[str, str], tokens: Sequence[str]) -> str | None:
    """Check `Authorization: Bearer <token>` against the accepted tokens (sources and the admin API).

    The token is compared as the exact bytes sent, after removing only ASCII spaces and tabs around it;
    every comparison is constant-time, and an empty token or an empty candidate never matches.

    Args:
        headers: request headers (case-insensitive mapping).
        tokens: the accepted tokens; none accepts nobody.

    Returns:
        None when the token is one of `tokens`, else a short reason for the log (never the token).
    """
    token = _credentials(headers, "bearer")
    if token is None:
        return "missing bearer token"
    return None if _any_equal(token, tokens) else "bearer token not recognised"


def matching_token(given: str, tokens: Sequence[str]) -> int | None:
    """Which of `tokens` a token typed into a form is (the console's sign-in), compared as `check_bearer` does.

    Every candidate is compared in constant time whatever matches, so the time taken tells nothing.

    Returns:
        The index of the matching token, or None.
    """
    given_bytes = _wire_bytes(given.strip(_OWS))
    found: int | None = None
    for i, candidate in enumerate(tokens):
        if given_bytes is not None and _any_equal(given_bytes, [candidate]) and found is None:
            found = i
    return found


def authenticate(
    auth: InboundAuthConfig, headers: Mapping[str, str], body: bytes | None, *, now: datetime
) -> str | None:
    """Return None when the request is authentic, else a short reason for the log.

    Args:
        auth: the source's configured auth.
        headers: request headers (case-insensitive mapping).
        body: the raw body; required when `needs_body(auth)`.
        now: the current time (signature timestamp tolerance).
    """
    if isinstance(auth, NoAuth):
        return None
    if isinstance(auth, BearerAuth):
        return check_bearer(headers, auth.all_tokens)
    if isinstance(auth, ApiKeyAuth):
        key = _wire_bytes(headers.get(auth.header, "").strip(_OWS))
        if not key:
            return f"missing {auth.header} header"
        return None if _any_equal(key, auth.keys) else "API key not recognised"
    if isinstance(auth, BasicAuth):
        encoded = _credentials(headers, "basic")
        if encoded is None:
            return "missing basic credentials"
        try:
            # Bytes in, bytes out: a non-ASCII or non-UTF-8 credential is simply one that matches nothing.
            decoded = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            return "malformed basic credentials"
        username, sep, password = decoded.partition(b":")
        # Both halves are always compared: no early exit on a wrong user name.
        ok = _any_equal(username, [auth.username]) & _any_equal(password, [auth.password])
        return None if sep and ok else "basic credentials not recognised"
    if body is None:
        return "signature check needs the body"
    try:
        verify(_keys(tuple(auth.all_secrets)), headers, body, now=now, tolerance_s=auth.tolerance_s)
    except SignatureError as exc:
        return f"signature rejected: {exc}"
    return None

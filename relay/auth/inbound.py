"""Checks the credentials a source sends with a push (basic, bearer, API key, Standard Webhooks).

Every comparison is constant-time; reasons are for logs and never contain the secrets themselves.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache

from relay.config import ApiKeyAuth, BasicAuth, BearerAuth, NoAuth, StandardWebhooksAuth
from relay.deliver.signing import SignatureError, parse_secret, verify

InboundAuthConfig = BasicAuth | BearerAuth | ApiKeyAuth | StandardWebhooksAuth | NoAuth

__all__ = ["authenticate", "needs_body"]


def needs_body(auth: InboundAuthConfig) -> bool:
    """Whether the check needs the request body (signatures); others run before the body is read."""
    return isinstance(auth, StandardWebhooksAuth)


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def _any_equal(given: str, candidates: Sequence[str]) -> bool:
    # Compare against every candidate so the time taken does not tell which one (or whether one) matched.
    found = False
    for candidate in candidates:
        found |= _equal(given, candidate)
    return found


@lru_cache(maxsize=256)
def _keys(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(parse_secret(s) for s in secrets)


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


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
        token = _bearer(headers)
        if token is None:
            return "missing bearer token"
        return None if _any_equal(token, auth.all_tokens) else "bearer token not recognised"
    if isinstance(auth, ApiKeyAuth):
        key = headers.get(auth.header)
        if not key:
            return f"missing {auth.header} header"
        return None if _any_equal(key, auth.keys) else "API key not recognised"
    if isinstance(auth, BasicAuth):
        value = headers.get("Authorization", "")
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic":
            return "missing basic credentials"
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "malformed basic credentials"
        username, sep, password = decoded.partition(":")
        # Both halves are always compared: no early exit on a wrong user name.
        ok = _equal(username, auth.username) & _equal(password, auth.password)
        return None if sep and ok else "basic credentials not recognised"
    if body is None:
        return "signature check needs the body"
    try:
        verify(_keys(tuple(auth.all_secrets)), headers, body, now=now, tolerance_s=auth.tolerance_s)
    except SignatureError as exc:
        return f"signature rejected: {exc}"
    return None

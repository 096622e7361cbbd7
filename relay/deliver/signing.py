"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.

Used to sign outgoing webhooks and to verify signed pushes from sources; receivers can use `verify` too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime

__all__ = ["SignatureError", "parse_secret", "sign", "signature_header", "verify"]

_PREFIX = "whsec_"


class SignatureError(ValueError):
    """A signature that does not verify; the message never contains secret material."""


def parse_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret.

    Raises:
        ValueError: no `whsec_` prefix, bad base64, or an empty key (the secret is not echoed).
    """
    if not isinstance(secret, str) or not secret.startswith(_PREFIX):
        raise ValueError("a webhook secret must look like whsec_<base64>")
    try:
        key = base64.b64decode(secret[len(_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be whsec_ followed by valid base64") from None
    if len(key) < 16:
        raise ValueError("a webhook secret must hold at least 16 bytes of key")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,` signature."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode()


def signature_header(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: one signature per key, space separated (secret rotation)."""
    return " ".join(sign(key, msg_id, timestamp, body) for key in keys)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for prefix in ("webhook-", "svix-"):
        value = headers.get(prefix + name)
        if value is None and not hasattr(headers, "getall"):
            # Plain dicts are case-sensitive: look the name up case-insensitively.
            wanted = (prefix + name).lower()
            value = next((v for k, v in headers.items() if k.lower() == wanted), None)
        if value is not None:
            return value
    return None


def verify(
    keys: Sequence[bytes], headers: Mapping[str, str], body: bytes, *, now: datetime, tolerance_s: float = 300
) -> None:
    """Check a Standard Webhooks signature; any key may match.

    Raises:
        SignatureError: missing headers, timestamp outside the tolerance, or no matching signature.
    """
    msg_id = _header(headers, "id")
    timestamp = _header(headers, "timestamp")
    signatures = _header(headers, "signature")
    if not msg_id:
        raise SignatureError("missing webhook-id header")
    if not timestamp:
        raise SignatureError("missing webhook-timestamp header")
    if not signatures:
        raise SignatureError("missing webhook-signature header")
    try:
        ts = int(timestamp)
    except ValueError:
        raise SignatureError("webhook-timestamp is not a number") from None
    if abs(now.timestamp() - ts) > tolerance_s:
        raise SignatureError("timestamp outside tolerance")
    candidates = [s.encode() for s in signatures.split() if s.startswith("v1,")]
    matched = False
    for key in keys:
        expected = sign(key, msg_id, ts, body).encode()
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no matching signature")

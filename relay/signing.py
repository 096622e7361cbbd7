"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.

Signs outgoing webhooks (one signature per configured secret, for rotation) and verifies signed pushes
from sources; receivers written in Python can use `verify` too (see `relay.verify`).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import datetime

__all__ = [
    "SignatureError",
    "check_signature_headers",
    "header_refusal",
    "parse_secret",
    "sign",
    "signature_header",
    "verify",
]

_PREFIX = "whsec_"
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
# RFC 9110 §5.1 field names are tokens; §5.5 field values hold no control character but tab. A lone
# surrogate has no UTF-8 encoding, so it cannot be written either.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_UNSENDABLE_VALUE_CHAR = re.compile("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
# What `sign` produces: base64 of a 32-byte HMAC-SHA256.
_V1_SIGNATURE = re.compile(r"v1,[A-Za-z0-9+/]{43}=")
_HEADER_NAMES = {
    f"{prefix}-{name}": name for prefix in ("webhook", "svix") for name in ("id", "timestamp", "signature")
}


class SignatureError(ValueError):
    """A signed request that does not verify; the message never contains secret material."""


def parse_secret(secret: str) -> bytes:
    """Decode a Standard Webhooks secret into its HMAC key.

    Args:
        secret: `whsec_` followed by the base64 key (padding optional, surrounding whitespace ignored).

    Returns:
        The raw key bytes.

    Raises:
        ValueError: no `whsec_` prefix, invalid base64, or an empty key. The message never repeats the
            secret, so it is safe to log or show in a config error.
    """
    text = secret.strip()
    if not text.startswith(_PREFIX):
        raise ValueError("a webhook secret must start with whsec_ followed by the base64 key")
    encoded = text[len(_PREFIX) :]
    if not _BASE64.fullmatch(encoded) or len(encoded.rstrip("=")) % 4 == 1:
        raise ValueError("a webhook secret must be whsec_ followed by valid base64")
    # Other Standard Webhooks tools accept unpadded keys; pad so the same secret works here.
    key = binascii.a2b_base64(encoded.rstrip("=") + "=" * (-len(encoded.rstrip("=")) % 4))
    if not key:
        raise ValueError("a webhook secret must not have an empty key after whsec_")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Compute one Standard Webhooks signature.

    Args:
        key: the HMAC key (from `parse_secret`).
        msg_id: the `webhook-id` header value.
        timestamp: the `webhook-timestamp` header value, Unix seconds.
        body: the exact body bytes sent.

    Returns:
        `v1,` followed by the base64 HMAC-SHA256 of `{msg_id}.{timestamp}.{body}`.
    """
    # The body is fed separately so a large body is never copied into a concatenated message.
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    return "v1," + binascii.b2a_base64(mac.digest(), newline=False).decode("ascii")


def signature_header(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """Build the `webhook-signature` header value.

    Args:
        keys: every active key; during a rotation the receiver may know only one of them.
        msg_id: the `webhook-id` header value.
        timestamp: the `webhook-timestamp` header value, Unix seconds.
        body: the exact body bytes sent.

    Returns:
        One `v1,` signature per key, in the order of `keys`, separated by single spaces.
    """
    return " ".join([sign(key, msg_id, timestamp, body) for key in keys])


def header_refusal(name: str, value: str) -> str | None:
    """Say why a header cannot be sent as given; the answer never repeats the value.

    Args:
        name: the header name.
        value: the header value.

    Returns:
        A reason naming the header and the offending character (`webhook-id has a control character
        (U+000A), which an HTTP header cannot carry`) when the name is not an HTTP token or the value holds a
        control character other than tab, or a character with no UTF-8 encoding; otherwise None.
    """
    if not _TOKEN.fullmatch(name):
        return f"header name {name!r} is not an HTTP token"
    bad = _UNSENDABLE_VALUE_CHAR.search(value)
    if bad is None:
        return None
    char = ord(bad.group())
    kind = "a lone surrogate" if 0xD800 <= char <= 0xDFFF else "a control character"
    return f"{name} has {kind} (U+{char:04X}), which an HTTP header cannot carry"


def _webhook_headers(headers: Mapping[str, str]) -> dict[str, str]:
    # One pass, case-insensitive, for any Mapping (plain dicts are case-sensitive); `webhook-` wins over `svix-`.
    found: dict[str, str] = {}
    svix: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        field = _HEADER_NAMES.get(lowered)
        if field is not None:
            target = found if lowered.startswith("webhook-") else svix
            target.setdefault(field, value)
    return {**svix, **found}


def check_signature_headers(headers: Mapping[str, str], *, now: datetime, tolerance_s: float = 300) -> None:
    """The checks of `verify` that need no body: run them before reading one.

    Args:
        headers: the request headers (`webhook-` or `svix-` names, any case).
        now: the current time, timezone-aware.
        tolerance_s: how far the signed timestamp may lie from `now`, in either direction.

    Raises:
        SignatureError: a header is missing or malformed, the timestamp is outside the tolerance, or no
            signature has the shape of a v1 signature (so none could match).
    """
    found = _webhook_headers(headers)
    timestamp = found.get("timestamp", "").strip()
    if not found.get("id") or not timestamp or not found.get("signature"):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError("webhook-timestamp is not Unix seconds")
    if abs(now.timestamp() - int(timestamp)) > tolerance_s:
        raise SignatureError("timestamp outside tolerance")
    if not any(_V1_SIGNATURE.fullmatch(s) for s in found["signature"].split()):
        raise SignatureError("no well-formed v1 signature in webhook-signature header")


def verify(
    keys: Sequence[bytes], headers: Mapping[str, str], body: bytes, *, now: datetime, tolerance_s: float = 300
) -> None:
    """Check an inbound Standard Webhooks signature.

    Header names are matched case-insensitively; `svix-id`, `svix-timestamp` and `svix-signature` are
    accepted in place of the `webhook-` names. Every candidate signature is compared in constant time
    against every key's expected signature.

    Args:
        keys: the accepted HMAC keys; a signature by any one of them passes.
        headers: the request headers.
        body: the raw request body, exactly as received.
        now: the current time, timezone-aware.
        tolerance_s: how far the signed timestamp may lie from `now`, in either direction.

    Raises:
        SignatureError: a header is missing or malformed, the timestamp is outside the tolerance, or no
            signature matches any key.
        ValueError: `now` is naive (a programming error, not a bad request).
    """
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    found = _webhook_headers(headers)
    msg_id = found.get("id")
    timestamp = found.get("timestamp")
    signatures = found.get("signature")
    if not msg_id:
        raise SignatureError("missing webhook-id header")
    if not timestamp:
        raise SignatureError("missing webhook-timestamp header")
    if not signatures:
        raise SignatureError("missing webhook-signature header")
    # Only ASCII space and tab are optional whitespace in a header; str.strip() would also take U+00A0 and more.
    timestamp = timestamp.strip(" \t")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError("webhook-timestamp is not Unix seconds")
    ts = int(timestamp)
    if abs(now.timestamp() - ts) > tolerance_s:
        raise SignatureError("timestamp outside tolerance")
    try:
        # Undecodable bytes arrive as lone surrogates (aiohttp's surrogateescape); the signed id is UTF-8 text.
        msg_id.encode("utf-8")
    except UnicodeEncodeError:
        raise SignatureError("webhook-id is not UTF-8 text") from None
    # Signatures are separated by single spaces; a valid one is base64, so anything not ASCII cannot match.
    candidates = [s.encode("ascii") for s in signatures.split(" ") if s.startswith("v1,") and s.isascii()]
    if not candidates:
        raise SignatureError("no v1 signature in webhook-signature header")
    matched = False
    for key in keys:
        expected = sign(key, msg_id, ts, body).encode()
        for candidate in candidates:
            # No early exit: the time taken does not tell which candidate or key matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no matching signature")

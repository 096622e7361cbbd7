"""For receivers written in Python: check a webhook from erp-relay without extra dependencies.

Call `verify_webhook(["whsec_…"], request.headers, body)` with the raw body bytes and answer 401 when it
raises `SignatureError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from relay.signing import SignatureError, parse_secret, verify

__all__ = ["SignatureError", "verify_webhook"]


def verify_webhook(
    secrets: str | Sequence[str], headers: Mapping[str, str], body: bytes, *, tolerance_s: float = 300
) -> None:
    """Raise SignatureError unless one of `secrets` signed `body` within `tolerance_s` of now."""
    keys = [parse_secret(s) for s in ([secrets] if isinstance(secrets, str) else secrets)]
    verify(keys, headers, body, now=datetime.now(UTC), tolerance_s=tolerance_s)

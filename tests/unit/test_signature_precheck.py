"""The body-free part of a Standard Webhooks check, run before a signature source's body is read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from helpers import WHSEC

from relay.signing import SignatureError, check_signature_headers, parse_secret, sign, verify

NOW = datetime(2026, 11, 20, 9, 41, 56, tzinfo=UTC)
TS = int(NOW.timestamp())
GOOD = {
    "webhook-id": "msg_1",
    "webhook-timestamp": str(TS),
    "webhook-signature": sign(parse_secret(WHSEC), "msg_1", TS, b"{}"),
}


def test_headers_of_a_valid_signature_pass_and_the_body_then_verifies() -> None:
    check_signature_headers(GOOD, now=NOW)
    check_signature_headers({k.replace("webhook-", "svix-").upper(): v for k, v in GOOD.items()}, now=NOW)
    verify([parse_secret(WHSEC)], GOOD, b"{}", now=NOW)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing"),
        ({**GOOD, "webhook-id": ""}, "missing"),
        ({k: v for k, v in GOOD.items() if k != "webhook-signature"}, "missing"),
        ({**GOOD, "webhook-timestamp": "2026-11-20"}, "not Unix seconds"),
        ({**GOOD, "webhook-timestamp": str(TS - 301)}, "outside tolerance"),
        ({**GOOD, "webhook-timestamp": str(TS + 301)}, "outside tolerance"),
        ({**GOOD, "webhook-signature": "v1,abc"}, "no well-formed v1 signature"),
        ({**GOOD, "webhook-signature": "v1a," + GOOD["webhook-signature"][3:]}, "no well-formed v1 signature"),
        ({**GOOD, "webhook-signature": GOOD["webhook-signature"] + "=="}, "no well-formed v1 signature"),
    ],
    ids=["none", "empty-id", "no-signature", "iso-timestamp", "old", "future", "short", "v1a", "padding"],
)
def test_missing_malformed_or_stale_headers_are_refused(headers: dict[str, str], message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        check_signature_headers(headers, now=NOW)


def test_one_well_formed_signature_among_others_is_enough() -> None:
    check_signature_headers({**GOOD, "webhook-signature": "v2,xyz " + GOOD["webhook-signature"]}, now=NOW)

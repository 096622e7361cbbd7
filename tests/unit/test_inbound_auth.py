"""The one credential check for sources and the admin API: exact bytes, ASCII whitespace only, no exceptions.

Header values are given as aiohttp hands them over: bytes that are not UTF-8 arrive as lone surrogates
(`surrogateescape`), so `"\\udcff"` below is the raw byte 0xFF on the wire.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from relay.auth.inbound import authenticate, check_bearer
from relay.config import ApiKeyAuth, BasicAuth, BearerAuth
from relay.signing import SignatureError, parse_secret, sign, verify

TOKEN = "hub-token-0123456789"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _headers(**values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in values.items()}))


# Blank-looking tokens (Unicode whitespace that str.strip()/split() remove), the real token with such a
# character after it, and bytes that are not UTF-8.
HOSTILE_BEARERS = [
    "Bearer \u00a0",
    "Bearer \u2003",
    "Bearer \x1c",
    "Bearer \x1c\x1d\x1e\x1f",
    f"Bearer {TOKEN}\u00a0",
    f"Bearer {TOKEN}\u2003",
    f"Bearer {TOKEN}\x1c",
    f"Bearer \u00a0{TOKEN}",
    "Bearer \udcff",
    f"Bearer {TOKEN}\udca0",
    "Bearer",
    "Bearer ",
    "\u0392earer " + TOKEN,  # a Greek capital beta, not a B
    "",
]


@pytest.mark.parametrize("value", HOSTILE_BEARERS)
def test_bearer_check_refuses_blank_padded_and_undecodable_tokens(value: str) -> None:
    assert check_bearer(_headers(Authorization=value), [TOKEN]) is not None


@pytest.mark.parametrize("value", ["Bearer \u00a0", "Bearer \u2003", "Bearer \x1c", "Bearer \udcff", "Bearer "])
def test_an_empty_configured_token_matches_nothing(value: str) -> None:
    # The configuration refuses "" at load; the check does not rely on that.
    assert check_bearer(_headers(Authorization=value), ["", "   "]) is not None


def test_no_configured_token_admits_nobody() -> None:
    assert check_bearer(_headers(Authorization=f"Bearer {TOKEN}"), []) is not None


@pytest.mark.parametrize(
    "value", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer   {TOKEN} \t", f"  Bearer {TOKEN}"]
)
def test_bearer_check_accepts_the_token_with_ascii_spaces_around_it(value: str) -> None:
    assert check_bearer(_headers(Authorization=value), ["other", TOKEN]) is None


def test_a_non_ascii_token_matches_its_exact_utf8_bytes_only() -> None:
    token = "tök-1"
    assert check_bearer(_headers(Authorization=f"Bearer {token}"), [token]) is None
    # The same text sent as Latin-1 bytes: aiohttp gives "t\udcf6k-1", which is not the configured token.
    assert check_bearer(_headers(Authorization="Bearer t\udcf6k-1"), [token]) is not None


def test_a_bearer_source_uses_the_same_check() -> None:
    auth = BearerAuth(type="bearer", tokens=[TOKEN])
    assert authenticate(auth, _headers(Authorization=f"Bearer {TOKEN}"), None, now=NOW) is None
    for value in HOSTILE_BEARERS:
        assert authenticate(auth, _headers(Authorization=value), None, now=NOW) is not None


@pytest.mark.parametrize("key", ["k-1\u00a0", "\u00a0k-1", "k\udcff", "\udcff", "\u2003", ""])
def test_api_key_is_compared_as_exact_bytes(key: str) -> None:
    auth = ApiKeyAuth(type="api-key", keys=["k-1"])
    assert authenticate(auth, _headers(X_API_Key=key), None, now=NOW) is not None
    assert authenticate(auth, _headers(X_API_Key=" k-1\t"), None, now=NOW) is None


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "value",
    [
        "Basic \udcff\udcfe",  # raw non-ASCII bytes in the header
        "Basic aW9uOnB3\udcff",
        _basic("ion:pw".encode("latin-1")) + "\u00a0",  # the right credentials followed by NBSP
        _basic("ion:p\xe4ss".encode("latin-1")),  # base64 of Latin-1 bytes: not UTF-8
        _basic(b"ion:\xff\xfe"),
        _basic(b"ion"),
        _basic(b":pw"),
        "Basic \u00a0",
        "Basic",
    ],
)
def test_basic_check_refuses_non_ascii_and_non_utf8_credentials(value: str) -> None:
    auth = BasicAuth(type="basic", username="ion", password="pw")
    assert authenticate(auth, _headers(Authorization=value), None, now=NOW) is not None


def test_basic_check_accepts_utf8_credentials_exactly() -> None:
    auth = BasicAuth(type="basic", username="ion", password="päss")
    assert authenticate(auth, _headers(Authorization=_basic("ion:päss".encode())), None, now=NOW) is None
    assert authenticate(auth, _headers(Authorization=_basic("ion:päss".encode("latin-1"))), None, now=NOW)


# ------------------------------------------------------------------------------------------ signatures


def _signed(msg_id: str = "evt-1", body: bytes = b"{}") -> dict[str, str]:
    ts = int(NOW.timestamp())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(parse_secret(WHSEC), msg_id, ts, body),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"webhook-signature": "v1,\udcff"}, "no v1 signature"),
        ({"webhook-id": "a\udcff"}, "webhook-id is not UTF-8 text"),
        ({"webhook-timestamp": f"{int(NOW.timestamp())}\u00a0"}, "not Unix seconds"),
        ({"webhook-timestamp": "\u0661\u0662"}, "not Unix seconds"),  # Arabic-Indic digits
    ],
)
def test_verify_answers_hostile_header_values_with_a_signature_error(change: dict[str, str], message: str) -> None:
    headers = {**_signed(), **change}
    with pytest.raises(SignatureError, match=message):
        verify([parse_secret(WHSEC)], headers, b"{}", now=NOW)


def test_verify_keeps_a_valid_signature_next_to_a_hostile_candidate() -> None:
    headers = _signed()
    headers["webhook-signature"] = "v1,\udcff " + headers["webhook-signature"]
    verify([parse_secret(WHSEC)], headers, b"{}", now=NOW)


def test_verify_separates_signatures_by_spaces_only() -> None:
    headers = _signed()
    headers["webhook-signature"] = "v1,AAAA\u00a0" + headers["webhook-signature"]
    with pytest.raises(SignatureError):
        verify([parse_secret(WHSEC)], headers, b"{}", now=NOW)


def test_verify_accepts_a_utf8_webhook_id() -> None:
    verify([parse_secret(WHSEC)], _signed("évt-1"), b"{}", now=NOW)

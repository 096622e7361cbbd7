"""Standard Webhooks signing: what the relay sends verifies with the `standardwebhooks` library, as receivers check."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from relay.signing import SignatureError, parse_secret, sign, signature_header, verify

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24tdGVzdA=="
BODY = b'{"eventId":"evt-1","documentType":"SyncSalesOrder","data":{"orderNumber":"SO-1"}}'
MSG_ID = "evt-1"


def _now() -> datetime:
    return datetime.now(UTC)


def _headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def _signed(body: bytes = BODY, *, secrets: tuple[str, ...] = (SECRET,), at: datetime | None = None) -> dict[str, str]:
    timestamp = int((at or _now()).timestamp())
    keys = [parse_secret(s) for s in secrets]
    return _headers(MSG_ID, timestamp, signature_header(keys, MSG_ID, timestamp, body))


# ------------------------------------------------------------------------------------------ parse_secret


def test_parse_secret_decodes_the_base64_key() -> None:
    assert parse_secret(SECRET) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert parse_secret(OTHER_SECRET) == b"second-secret-for-rotation-test"


def test_parse_secret_accepts_unpadded_base64_and_surrounding_whitespace() -> None:
    # Secrets read from files end with a newline; other Standard Webhooks tools accept unpadded keys.
    assert parse_secret(OTHER_SECRET.rstrip("=") + "\n") == b"second-secret-for-rotation-test"


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with whsec_"),
        ("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with whsec_"),
        ("whsec_not*base64!secret", "valid base64"),
        ("whsec_MfKQ9r8G-KYqrTwj_UPD8ILPZIo2LaLaSw", "valid base64"),
        ("whsec_abcde", "valid base64"),
        ("whsec_", "empty key"),
        ("whsec_==", "empty key"),
        ("", "must start with whsec_"),
    ],
)
def test_parse_secret_refuses_bad_secrets_without_echoing_them(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_secret(secret)
    key_part = secret.removeprefix("whsec_").strip("=")
    if key_part:
        assert key_part not in str(info.value)


# ------------------------------------------------------------------------------------------ sign


def test_sign_is_v1_base64_hmac_sha256_of_id_timestamp_body() -> None:
    key = parse_secret(SECRET)
    # Reference value from the library's own signer, for the same id, timestamp and body.
    at = datetime.fromtimestamp(1_700_000_000, UTC)
    expected = Webhook(SECRET).sign(MSG_ID, at, BODY.decode())
    assert sign(key, MSG_ID, 1_700_000_000, BODY) == expected


def test_signed_webhook_verifies_with_the_standardwebhooks_library() -> None:
    headers = _signed()
    assert Webhook(SECRET).verify(BODY, headers) == {
        "eventId": "evt-1",
        "documentType": "SyncSalesOrder",
        "data": {"orderNumber": "SO-1"},
    }


def test_two_secrets_give_two_signatures_each_verifying_alone() -> None:
    headers = _signed(secrets=(SECRET, OTHER_SECRET))
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    for secret, signature in zip((SECRET, OTHER_SECRET), signatures, strict=True):
        alone = {**headers, "webhook-signature": signature}
        Webhook(secret).verify(BODY, alone)
        # The receiver that knows only one secret accepts the header with both signatures too.
        Webhook(secret).verify(BODY, headers)
    other = dict(headers, **{"webhook-signature": signatures[1]})
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY, other)


def test_signature_header_with_no_keys_is_empty() -> None:
    assert signature_header([], MSG_ID, 1, BODY) == ""


# ------------------------------------------------------------------------------------------ verify


def test_verify_accepts_what_the_library_signs() -> None:
    now = _now()
    timestamp = int(now.timestamp())
    signature = Webhook(SECRET).sign(MSG_ID, datetime.fromtimestamp(timestamp, UTC), BODY.decode())
    verify([parse_secret(SECRET)], _headers(MSG_ID, timestamp, signature), BODY, now=now)


def test_verify_accepts_any_key_and_any_candidate() -> None:
    now = _now()
    headers = _signed(secrets=(OTHER_SECRET,), at=now)
    headers["webhook-signature"] = "v1,bm90LWEtc2lnbmF0dXJl v2,whatever " + headers["webhook-signature"]
    verify([parse_secret(SECRET), parse_secret(OTHER_SECRET)], headers, BODY, now=now)


@pytest.mark.parametrize(
    "names",
    [
        ("Webhook-Id", "Webhook-Timestamp", "Webhook-Signature"),
        ("WEBHOOK-ID", "webhook-TIMESTAMP", "webhook-signature"),
        ("svix-id", "svix-timestamp", "svix-signature"),
        ("Svix-Id", "Svix-Timestamp", "Svix-Signature"),
    ],
)
def test_verify_finds_headers_case_insensitively_and_under_svix_names(names: tuple[str, str, str]) -> None:
    now = _now()
    signed = _signed(at=now)
    headers = dict(zip(names, signed.values(), strict=True))
    verify([parse_secret(SECRET)], headers, BODY, now=now)


def test_verify_works_with_aiohttp_request_headers() -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    now = _now()
    headers = CIMultiDictProxy(CIMultiDict({k.title(): v for k, v in _signed(at=now).items()}))
    verify([parse_secret(SECRET)], headers, BODY, now=now)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: h.pop("webhook-id"), "missing webhook-id header"),
        (lambda h: h.pop("webhook-timestamp"), "missing webhook-timestamp header"),
        (lambda h: h.pop("webhook-signature"), "missing webhook-signature header"),
        (lambda h: h.update({"webhook-id": ""}), "missing webhook-id header"),
        (lambda h: h.update({"webhook-timestamp": "soon"}), "webhook-timestamp is not Unix seconds"),
        (lambda h: h.update({"webhook-timestamp": "1e9"}), "webhook-timestamp is not Unix seconds"),
        (lambda h: h.update({"webhook-signature": "v2,abc"}), "no v1 signature"),
        (lambda h: h.update({"webhook-id": "evt-2"}), "no matching signature"),
    ],
)
def test_verify_refuses_missing_or_altered_headers(change: Callable[[dict[str, str]], object], message: str) -> None:
    now = _now()
    headers = _signed(at=now)
    change(headers)
    with pytest.raises(SignatureError, match=message):
        verify([parse_secret(SECRET)], headers, BODY, now=now)


@pytest.mark.parametrize("offset_s", [-301, 301, -86400, 86400])
def test_verify_refuses_stale_and_future_timestamps(offset_s: int) -> None:
    now = _now()
    headers = _signed(at=now + timedelta(seconds=offset_s))
    with pytest.raises(SignatureError, match="timestamp outside tolerance"):
        verify([parse_secret(SECRET)], headers, BODY, now=now)


@pytest.mark.parametrize("offset_s", [-299, 0, 299])
def test_verify_accepts_timestamps_within_tolerance(offset_s: int) -> None:
    now = _now()
    verify([parse_secret(SECRET)], _signed(at=now + timedelta(seconds=offset_s)), BODY, now=now)


def test_verify_refuses_a_tampered_body() -> None:
    now = _now()
    headers = _signed(at=now)
    with pytest.raises(SignatureError, match="no matching signature"):
        verify([parse_secret(SECRET)], headers, BODY.replace(b"SO-1", b"SO-2"), now=now)


def test_verify_refuses_a_wrong_secret_and_never_shows_key_material() -> None:
    now = _now()
    headers = _signed(at=now)
    with pytest.raises(SignatureError, match="no matching signature") as info:
        verify([parse_secret(OTHER_SECRET)], headers, BODY, now=now)
    assert "LaLaSw" not in str(info.value)
    assert "rotation" not in str(info.value)


def test_verify_refuses_when_no_key_is_configured() -> None:
    now = _now()
    with pytest.raises(SignatureError, match="no matching signature"):
        verify([], _signed(at=now), BODY, now=now)


def test_verify_wants_an_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify([parse_secret(SECRET)], _signed(), BODY, now=datetime.now())


# ------------------------------------------------------------------------------------------ property


@given(
    body=st.text(alphabet=st.characters(codec="utf-8")).map(str.encode),
    msg_id=st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=60),
    offset_s=st.integers(min_value=-250, max_value=250),
    use_other=st.booleans(),
)
def test_any_body_id_and_timestamp_round_trips_through_the_library(
    body: bytes, msg_id: str, offset_s: int, use_other: bool
) -> None:
    secret = OTHER_SECRET if use_other else SECRET
    # The library compares with the wall clock and refuses beyond ±5 minutes: stay well inside.
    timestamp = int(_now().timestamp()) + offset_s
    headers = _headers(msg_id, timestamp, sign(parse_secret(secret), msg_id, timestamp, body))
    Webhook(secret).verify(body, headers, json_parse=False)
    verify([parse_secret(secret)], headers, body, now=_now())

"""Hostile headers, query parameters and admin bodies against the real app: a clear 4xx, never a 500.

Requests go over a raw socket because aiohttp's client refuses to send header bytes that are not ASCII;
the relay must still answer them. Each test also checks that nothing was logged at error level.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from conftest import App, make_app
from helpers import HUB_TOKEN, WHSEC, base_config, sample_event

from relay.signing import parse_secret, sign
from relay.sim.ion import BodFactory, make_ims_message
from relay.store import EventFilter

ADMIN_TOKEN = "adm-token-0123456789"
ADMIN = b"Authorization: Bearer " + ADMIN_TOKEN.encode()
ION_BASIC = b"Authorization: Basic " + base64.b64encode(b"ion:ion-password")


@pytest.fixture
async def hostile_app(tmp_path: Path) -> Any:
    data = base_config(tmp_path, admin={"tokens": [ADMIN_TOKEN]})
    data["sources"] += [
        {"name": "signed", "kind": "json-push", "auth": {"type": "standard-webhooks", "secret": WHSEC}},
        {"name": "ion", "kind": "ion-ims", "auth": {"type": "basic", "username": "ion", "password": "ion-password"}},
        {"name": "keyed", "kind": "json-push", "auth": {"type": "api-key", "keys": ["key-0123456789"]}},
    ]
    application, _ = await make_app(tmp_path, data)
    yield application
    await application.client.close()
    await application.store.close()


@pytest.fixture
def error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    """A function giving every error-level line logged so far (structlog and stdlib, aiohttp's included)."""
    with caplog.at_level(logging.ERROR), structlog.testing.capture_logs() as logs:

        def errors() -> list[str]:
            found = [str(entry) for entry in logs if entry.get("log_level") in ("error", "critical")]
            return found + [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

        yield errors


async def send(app: App, method: str, path: str, headers: list[bytes], body: bytes = b"") -> tuple[int, Any]:
    """One raw HTTP/1.1 request; the status and the JSON body of the answer."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    head += b"".join(h + b"\r\n" for h in headers)
    head += b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    reader, writer = await asyncio.open_connection("127.0.0.1", app.client.port)
    try:
        writer.write(head + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, content = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), orjson.loads(content)


# ------------------------------------------------------------------------------------------ credentials

# Bearer values aiohttp lets through that must not authenticate: the real token followed or preceded by a
# Unicode space (as UTF-8 or as a raw Latin-1 byte), blank-looking tokens, and bytes that are not UTF-8.
HOSTILE_BEARERS = [
    b"Bearer \xc2\xa0",
    b"Bearer \xe2\x80\x83",
    b"Bearer \xa0",
    b"Bearer \xff",
    b"Bearer TOKEN\xc2\xa0",
    b"Bearer TOKEN\xe2\x80\x83",
    b"Bearer TOKEN\xa0",
    b"Bearer \xc2\xa0TOKEN",
    b"Bearer TOKEN\xff",
]


@pytest.mark.parametrize("value", HOSTILE_BEARERS)
async def test_hostile_admin_bearer_tokens_answer_401(
    hostile_app: App, error_logs: Callable[[], list[str]], value: bytes
) -> None:
    header = b"Authorization: " + value.replace(b"TOKEN", ADMIN_TOKEN.encode())
    status, body = await send(hostile_app, "GET", "/v1/admin/subscribers", [header])
    assert (status, body["error"]) == (401, "unauthorized")
    assert error_logs() == []


@pytest.mark.parametrize("value", HOSTILE_BEARERS)
async def test_hostile_source_bearer_tokens_answer_401(
    hostile_app: App, error_logs: Callable[[], list[str]], value: bytes
) -> None:
    header = b"Authorization: " + value.replace(b"TOKEN", HUB_TOKEN.encode())
    event = orjson.dumps(sample_event("order/synced", "hostile-1"))
    status, body = await send(
        hostile_app, "POST", "/v1/sources/hub/events", [header, b"Content-Type: application/json"], event
    )
    assert (status, body["error"]) == (401, "unauthorized")
    assert await hostile_app.store.list_events(EventFilter(limit=10)) == []
    assert error_logs() == []


async def test_the_real_tokens_still_work_over_the_wire(hostile_app: App, error_logs: Callable[[], list[str]]) -> None:
    status, _ = await send(hostile_app, "GET", "/v1/admin/subscribers", [ADMIN])
    assert status == 200
    event = orjson.dumps(sample_event("order/synced", "hostile-ok"))
    bearer = b"Authorization: Bearer " + HUB_TOKEN.encode()
    status, body = await send(
        hostile_app, "POST", "/v1/sources/hub/events", [bearer, b"Content-Type: application/json"], event
    )
    assert (status, body["status"]) == (202, "accepted")
    assert error_logs() == []


def _signed_headers(msg_id: bytes, signature: bytes | None = None) -> list[bytes]:
    ts = int(time.time())
    event = orjson.dumps(sample_event("order/synced", "signed-1"))
    real = sign(parse_secret(WHSEC), msg_id.decode("utf-8", "replace"), ts, event).encode()
    return [
        b"webhook-id: " + msg_id,
        b"webhook-timestamp: %d" % ts,
        b"webhook-signature: " + (signature if signature is not None else real),
        b"Content-Type: application/json",
    ]


@pytest.mark.parametrize(
    "headers",
    [
        _signed_headers(b"msg-1", b"v1,\xff"),
        _signed_headers(b"a\xff"),
        _signed_headers(b"a\xff", b"v1,\xff v1,\xc2\xa0"),
    ],
    ids=["signature-ff", "id-ff", "both"],
)
async def test_standard_webhooks_headers_with_non_utf8_bytes_answer_401(
    hostile_app: App, error_logs: Callable[[], list[str]], headers: list[bytes]
) -> None:
    event = orjson.dumps(sample_event("order/synced", "signed-1"))
    status, body = await send(hostile_app, "POST", "/v1/sources/signed/events", headers, event)
    assert (status, body["error"]) == (401, "unauthorized")
    assert error_logs() == []


@pytest.mark.parametrize(
    "value",
    [
        b"Basic \xff\xfe",
        b"Basic " + base64.b64encode(b"ion:ion-password") + b"\xc2\xa0",
        b"Basic " + base64.b64encode(b"ion:ion-password") + b"\xa0",
        b"Basic " + base64.b64encode("ion:ion-pässword".encode("latin-1")),
        b"Basic \xc3\xa9",
    ],
)
@pytest.mark.parametrize("route", ["GET /ion/ion/service/ping", "POST /ion/ion/service/v3/multipartMessage"])
async def test_non_ascii_basic_credentials_answer_401(
    hostile_app: App, error_logs: Callable[[], list[str]], value: bytes, route: str
) -> None:
    method, path = route.split()
    status, body = await send(hostile_app, method, path, [b"Authorization: " + value])
    assert (status, body["error"]) == (401, "unauthorized")
    assert error_logs() == []


@pytest.mark.parametrize("value", [b"key-0123456789\xc2\xa0", b"key-0123456789\xff", b"\xc2\xa0", b"\xff"])
async def test_hostile_api_keys_answer_401(hostile_app: App, error_logs: Callable[[], list[str]], value: bytes) -> None:
    event = orjson.dumps(sample_event("order/synced", "keyed-1"))
    status, body = await send(
        hostile_app,
        "POST",
        "/v1/sources/keyed/events",
        [b"X-API-Key: " + value, b"Content-Type: application/json"],
        event,
    )
    assert (status, body["error"]) == (401, "unauthorized")
    assert error_logs() == []


# ------------------------------------------------------------------------------------------ other headers


async def test_a_non_utf8_tenant_header_answers_400(hostile_app: App, error_logs: Callable[[], list[str]]) -> None:
    # X-TenantId is used when the BOD carries no TenantID; its value would end up in the stored event.
    bod = BodFactory(3).next_bod()
    message = make_ims_message(bod, payload=re.sub(rb"<TenantID>[^<]*</TenantID>", b"", bod.xml))
    multipart = (
        b'--B\r\nContent-Disposition: form-data; name="ParameterRequest"\r\nContent-Type: application/json\r\n\r\n'
        + orjson.dumps(message.parameters)
        + b'\r\n--B\r\nContent-Disposition: form-data; name="MessagePayload"\r\nContent-Type: application/xml\r\n\r\n'
        + message.payload
        + b"\r\n--B--\r\n"
    )
    headers = [ION_BASIC, b"Content-Type: multipart/form-data; boundary=B"]
    status, body = await send(
        hostile_app, "POST", "/ion/ion/service/v3/multipartMessage", [*headers, b"X-TenantId: HALL\xffRAN"], multipart
    )
    assert (status, body["error"]) == (400, "malformed_header")
    assert "X-TenantId" in body["message"]
    status, body = await send(
        hostile_app, "POST", "/ion/ion/service/v3/multipartMessage", [*headers, b"X-TenantId: HALLORAN"], multipart
    )
    assert (status, body["status"]) == (202, "accepted")
    assert error_logs() == []


async def test_a_non_utf8_content_type_is_recorded_with_the_quarantined_body(
    hostile_app: App, error_logs: Callable[[], list[str]]
) -> None:
    bearer = b"Authorization: Bearer " + HUB_TOKEN.encode()
    headers = [bearer, b"Content-Type: application/json; x=\xff"]
    status, body = await send(hostile_app, "POST", "/v1/sources/hub/events", headers, b"{not json")
    assert (status, body["error"]) == (400, "malformed_body")
    entry = await hostile_app.store.get_quarantine(body["quarantineId"])
    assert entry is not None
    assert entry.content_type == "application/json; x=?"
    assert error_logs() == []


# ------------------------------------------------------------------------------------------ admin parameters


@pytest.mark.parametrize(
    "path",
    [
        "/v1/admin/events?since=0001-01-01T00:00:00%2B01:00",
        "/v1/admin/events?until=9999-12-31T23:59:59-01:00",
        "/v1/admin/deliveries?since=0001-01-01T00:00:00%2B01:00",
        "/v1/admin/deliveries?until=9999-12-31T23:59:59-01:00",
        "/v1/admin/dlq?since=0001-01-01T00:00:00%2B01:00",
        "/v1/admin/dlq?until=9999-12-31T23:59:59-14:00",
        "/v1/admin/deliveries?since=garbage",
        "/v1/admin/events?limit=99999999999999999999",
        "/v1/admin/events?limit=" + "9" * 5000,
        "/v1/admin/events?limit=-1",
        "/v1/admin/events?limit=0",
        "/v1/admin/events?limit=%EF%BC%91",  # a fullwidth digit one
        "/v1/admin/deliveries?limit=%C2%B2",  # a superscript two
        "/v1/admin/quarantine?limit=1e3",
    ],
)
async def test_bad_admin_query_parameters_answer_400(
    hostile_app: App, error_logs: Callable[[], list[str]], path: str
) -> None:
    status, body = await send(hostile_app, "GET", path, [ADMIN])
    assert (status, body["error"]) == (400, "bad_request")
    name = re.search(r"\?(\w+)=", path)
    assert name is not None
    assert body["message"].startswith(name.group(1) + ": ")
    assert error_logs() == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/admin/deliveries/99999999999999999999",
        "/v1/admin/deliveries/9223372036854775808",
        "/v1/admin/deliveries/%C2%B2",
        "/v1/admin/deliveries/-1",
        "/v1/admin/quarantine/99999999999999999999",
        "/v1/admin/quarantine/9223372036854775808",
        "/v1/admin/quarantine/%C2%B2",
    ],
)
async def test_ids_that_cannot_name_a_row_answer_404(
    hostile_app: App, error_logs: Callable[[], list[str]], path: str
) -> None:
    status, body = await send(hostile_app, "GET", path, [ADMIN])
    assert (status, body["error"]) == (404, "not_found")
    assert error_logs() == []


async def test_the_largest_row_id_is_a_plain_not_found(hostile_app: App, error_logs: Callable[[], list[str]]) -> None:
    status, body = await send(hostile_app, "GET", "/v1/admin/quarantine/9223372036854775807", [ADMIN])
    assert (status, body["error"]) == (404, "not_found")
    assert error_logs() == []


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/v1/admin/dlq/redrive", {"since": 123}, "since"),
        ("/v1/admin/dlq/redrive", {"until": [1]}, "until"),
        ("/v1/admin/dlq/redrive", {"since": "0001-01-01T00:00:00+01:00"}, "since"),
        ("/v1/admin/dlq/redrive", {"eventId": 5}, "eventId"),
        ("/v1/admin/dlq/redrive", {"subscriber": {"name": "s"}}, "subscriber"),
        ("/v1/admin/dlq/redrive", {"event_id": "evt-1"}, "event_id"),
        ("/v1/admin/replay", {"since": 123}, "since"),
        ("/v1/admin/replay", {"until": "9999-12-31T23:59:59-01:00"}, "until"),
        ("/v1/admin/replay", {"subscriber": 123}, "subscriber"),
        ("/v1/admin/replay", {"eventId": ["evt-1"]}, "eventId"),
        ("/v1/admin/replay", {"dryRun": "no"}, "dryRun"),
        ("/v1/admin/replay", {"channel": 1.5}, "channel"),
        ("/v1/admin/replay", {"evntId": "evt-1"}, "evntId"),
    ],
)
async def test_wrong_types_in_admin_bodies_answer_400_naming_the_field(
    hostile_app: App, error_logs: Callable[[], list[str]], path: str, payload: dict[str, Any], field: str
) -> None:
    status, body = await send(
        hostile_app, "POST", path, [ADMIN, b"Content-Type: application/json"], orjson.dumps(payload)
    )
    assert (status, body["error"]) == (400, "bad_request")
    assert body["message"].startswith(f"{field}: ")
    assert error_logs() == []


async def test_well_formed_admin_bodies_still_work(hostile_app: App, error_logs: Callable[[], list[str]]) -> None:
    json_type = b"Content-Type: application/json"
    status, body = await send(hostile_app, "POST", "/v1/admin/dlq/redrive", [ADMIN, json_type], b"")
    assert (status, body) == (200, {"redriven": 0, "dryRun": False})
    replay = orjson.dumps({"since": "2026-01-01T00:00:00+01:00", "until": "", "dryRun": True, "key": None})
    status, body = await send(hostile_app, "POST", "/v1/admin/replay", [ADMIN, json_type], replay)
    assert (status, body) == (200, {"events": 0, "deliveries": 0, "dryRun": True})
    assert error_logs() == []


# ------------------------------------------------------------------------------ refused before routing


async def _raw(app: App, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", app.client.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/admin/subscribers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x1c\r\nConnection: close\r\n\r\n",
        b"GET /v1/admin/subscribers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\x00b\r\nConnection: close\r\n\r\n",
        b"GET /v1/admin/\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /v1/sources/hub/events HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\nConnection: close\r\n\r\n",
    ],
    ids=["bearer-fs", "bearer-nul", "path-xff", "bad-content-length"],
)
async def test_requests_the_server_cannot_parse_are_400_without_an_error_log(
    hostile_app: App, error_logs: Callable[[], list[str]], request_bytes: bytes
) -> None:
    answer = await _raw(hostile_app, request_bytes)
    assert answer.split(b" ", 2)[1] == b"400", answer[:100]
    assert error_logs() == []
    assert b"Bearer" not in answer.partition(b"\r\n\r\n")[0]

"""What a sender without credentials can make the relay do: answer 401 and nothing else.

No per-request fact of such a request becomes a metric label, source names and kinds cannot be probed,
signature sources bound the bodies they read before the signature is known, and IMS multipart bodies
cannot carry thousands of parts.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import App, make_app
from helpers import HUB_TOKEN, WHSEC, base_config, relay_process, sample_event, until, write_config
from standardwebhooks import Webhook

ION_USER, ION_PASSWORD = "ion", "ion-gateway-password"
SOURCES = [
    {"name": "hub", "kind": "json-push", "auth": {"type": "bearer", "tokens": [HUB_TOKEN]}},
    {"name": "signed-a", "kind": "json-push", "auth": {"type": "standard-webhooks", "secret": WHSEC}},
    {"name": "signed-b", "kind": "json-push", "auth": {"type": "standard-webhooks", "secret": WHSEC}},
    {"name": "signed-c", "kind": "json-push", "auth": {"type": "standard-webhooks", "secret": WHSEC}},
    {
        "name": "halloran-ion",
        "kind": "ion-ims",
        "auth": {"type": "basic", "username": ION_USER, "password": ION_PASSWORD},
    },
]
ION_AUTH = "Basic " + base64.b64encode(f"{ION_USER}:{ION_PASSWORD}".encode()).decode()
# Stalled bodies: 60,000 bytes promised, two fit in a source's budget, three in the total one.
BODY_BYTES = 60_000
SERVER = {
    "max_body_bytes": 1_048_576,
    "max_unauthenticated_body_bytes_per_source": 131_072,
    "max_unauthenticated_body_bytes": 196_608,
    "read_timeout": "5s",
}


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[App]:
    data = base_config(tmp_path, sources=SOURCES)
    data["server"].update(SERVER)
    application, _ = await make_app(tmp_path, data)
    yield application
    await application.client.close()
    await application.store.close()


class Senders:
    """Raw connections that send a request's headers and maybe part of its body, then stall."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.writers: list[asyncio.StreamWriter] = []

    async def open(self, path: str, headers: dict[str, str], body: bytes = b"") -> asyncio.StreamReader:
        reader, writer = await asyncio.open_connection(self.app.client.host, self.app.client.port)
        self.writers.append(writer)
        head = f"POST {path} HTTP/1.1\r\nHost: relay\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        return reader

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()


@pytest.fixture
def senders(relay: App) -> Iterator[Senders]:
    opened = Senders(relay)
    yield opened
    opened.close()


async def _answer(reader: asyncio.StreamReader, timeout_s: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of the answer, which must come within `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if line)
        body = await reader.readexactly(int(headers.get("Content-Length", "0")))
    return int(lines[0].split()[1]), headers, body


def _signature_headers(body: bytes, *, msg_id: str | None = None) -> dict[str, str]:
    from datetime import UTC, datetime

    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = int(time.time())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": Webhook(WHSEC).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode()),
        "Content-Type": "application/json",
    }


def _forged_signature_headers(size_bytes: int) -> dict[str, str]:
    """Well-formed Standard Webhooks headers with a signature that cannot match."""
    return {
        "webhook-id": f"msg_{uuid.uuid4().hex}",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1," + base64.b64encode(b"\0" * 32).decode(),
        "Content-Type": "application/json",
        "Content-Length": str(size_bytes),
    }


async def _metrics(app: App) -> str:
    async with app.client.get("/metrics") as r:
        return await r.text()


def _sample(text: str, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


# ------------------------------------------------------------------------ item 3: metrics and memory


async def test_oversize_requests_on_long_paths_without_credentials_get_401_and_no_metric_labels(
    relay: App, senders: Senders
) -> None:
    before = await _metrics(relay)
    paths = [f"/v1/sources/hub/events/{uuid.uuid4()}{'x' * 4000}" for _ in range(300)]
    for path in paths:
        reader = await senders.open(path, {"Content-Type": "application/json", "Content-Length": "99999999"})
        status, _, body = await _answer(reader)
        assert (status, orjson.loads(body)["error"]) == (401, "unauthorized")
        senders.close()
    after = await _metrics(relay)
    assert "xxxx" not in after
    assert not any(path.split("/")[-1][:36] in after for path in paths)
    assert len(after) - len(before) < 5_000, len(after) - len(before)
    unauthorized = 'relay_events_received_total{channel="-",result="unauthorized",source="hub"}'
    assert _sample(after, unauthorized) - _sample(before, unauthorized) == 300


async def test_an_authenticated_client_cannot_create_channel_labels_either(relay: App) -> None:
    before = await _metrics(relay)
    for n in range(100):
        path = f"/v1/sources/hub/events/made-up-{n}/{'y' * 500}"
        async with relay.client.post(
            path, data=b"{}", headers={"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "text/plain"}
        ) as r:
            assert r.status == 415
    after = await _metrics(relay)
    assert "made-up-" not in after
    refused = 'relay_events_received_total{channel="-",result="refused",source="hub"}'
    assert _sample(after, refused) - _sample(before, refused) == 100


async def test_unknown_source_names_are_counted_under_a_dash(relay: App) -> None:
    before = await _metrics(relay)
    names = [f"probe-{uuid.uuid4().hex}" for _ in range(100)]
    for name in names:
        async with relay.client.post(f"/v1/sources/{name}/events/order/synced", data=b"{}") as r:
            assert r.status == 401
        async with relay.client.post(f"/ion/{name}/service/v3/multipartMessage", data=b"") as r:
            assert r.status == 401
    after = await _metrics(relay)
    assert "probe-" not in after
    assert len(after) - len(before) < 5_000, len(after) - len(before)
    unauthorized = 'relay_events_received_total{channel="-",result="unauthorized",source="-"}'
    assert _sample(after, unauthorized) - _sample(before, unauthorized) == 200


# ------------------------------------------------------------------------ item 10: names cannot be probed


async def _answer_to(app: App, path: str, headers: dict[str, str], method: str = "POST") -> tuple[Any, ...]:
    async with app.client.request(method, path, data=b'{"a":1}', headers=headers) as r:
        body = await r.read()
        shown = {k: v for k, v in r.headers.items() if k not in ("Date",)}
        return r.status, body, tuple(sorted(shown.items()))


async def test_unknown_sources_and_sources_of_another_kind_get_the_answer_bad_credentials_get(relay: App) -> None:
    json_type = {"Content-Type": "application/json"}
    bad_answers = [
        # JSON push route: wrong token, no token, oversize or wrong type without credentials, a signature
        # source without a signature; then names that are not JSON push sources.
        await _answer_to(relay, "/v1/sources/hub/events", {**json_type, "Authorization": "Bearer wrong"}),
        await _answer_to(relay, "/v1/sources/hub/events/order/synced", json_type),
        await _answer_to(relay, "/v1/sources/hub/events", {"Content-Type": "text/plain"}),
        await _answer_to(relay, "/v1/sources/signed-a/events", json_type),
        await _answer_to(relay, "/v1/sources/nope/events", {**json_type, "Authorization": f"Bearer {HUB_TOKEN}"}),
        await _answer_to(relay, "/v1/sources/nope/events/order/synced", json_type),
        await _answer_to(relay, "/v1/sources/halloran-ion/events", {**json_type, "Authorization": ION_AUTH}),
        # IMS routes: wrong password; unknown names; a JSON push name.
        await _answer_to(relay, "/ion/halloran-ion/service/v3/multipartMessage", {"Authorization": "Basic eDp5"}),
        await _answer_to(relay, "/ion/halloran-ion/service/ping", {}, method="GET"),
        await _answer_to(relay, "/ion/nope/service/v3/multipartMessage", {"Authorization": ION_AUTH}),
        await _answer_to(relay, "/ion/nope/service/ping", {"Authorization": ION_AUTH}, method="GET"),
        await _answer_to(relay, "/ion/hub/service/v2/discovery", {"Authorization": f"Bearer {HUB_TOKEN}"}),
    ]
    assert bad_answers[0][0] == 401
    assert all(answer == bad_answers[0] for answer in bad_answers), bad_answers
    # The same credentials still work where they belong.
    async with relay.client.get("/ion/halloran-ion/service/ping", headers={"Authorization": ION_AUTH}) as r:
        assert r.status == 200


# ------------------------------------------------------------------------ item 8: bodies read before the signature


async def test_signature_sources_refuse_requests_without_well_formed_signature_headers_before_reading(
    relay: App, senders: Senders
) -> None:
    good = _forged_signature_headers(BODY_BYTES)
    cases = [
        {"Content-Type": "application/json", "Content-Length": str(BODY_BYTES)},
        {**good, "webhook-timestamp": str(int(time.time()) - 3600)},
        {**good, "webhook-timestamp": "soon"},
        {**good, "webhook-signature": "v1,short"},
        {**good, "webhook-signature": "v2," + base64.b64encode(b"\0" * 32).decode()},
        {k: v for k, v in good.items() if k != "webhook-id"},
    ]
    for headers in cases:
        # The body is never sent: the answer must not wait for it.
        status, _, body = await _answer(await senders.open("/v1/sources/signed-a/events", headers), timeout_s=1.0)
        assert (status, orjson.loads(body)["error"]) == (401, "unauthorized"), headers


async def test_stalled_unverified_bodies_beyond_the_budget_are_refused_before_reading(
    relay: App, senders: Senders
) -> None:
    async def probe(source: str) -> int:
        # A whole body with a wrong signature: 401 once read, 503 when the budget refuses to read it.
        async with relay.client.post(
            f"/v1/sources/{source}/events", data=b" " * BODY_BYTES, headers=_forged_signature_headers(BODY_BYTES)
        ) as r:
            return r.status

    async def signed_event(source: str, event_id: str) -> int:
        body = orjson.dumps(sample_event("order/synced", event_id))
        async with relay.client.post(f"/v1/sources/{source}/events", data=body, headers=_signature_headers(body)) as r:
            return r.status

    try:
        # Two senders without credentials stall after 1,000 of 60,000 bytes: signed-a's budget is full.
        for _ in range(2):
            await senders.open("/v1/sources/signed-a/events", _forged_signature_headers(BODY_BYTES), b" " * 1000)

        async def is_busy() -> bool:
            return await probe("signed-a") == 503

        await until(is_busy, timeout=5)
        # Refused before reading: the answer comes although the body is never sent.
        reader = await senders.open("/v1/sources/signed-a/events", _forged_signature_headers(BODY_BYTES))
        status, headers, body = await _answer(reader, timeout_s=1.0)
        assert (status, orjson.loads(body)["error"], headers["Retry-After"]) == (503, "busy", "1")
        # Everyone else is served meanwhile.
        async with relay.client.post(
            "/v1/sources/hub/events",
            data=orjson.dumps(sample_event("order/synced", "hub-1")),
            headers={"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"},
        ) as r:
            assert r.status == 202
        assert await signed_event("signed-b", "b-1") == 202
        # One more stalled body on signed-b fills the total budget: a large body for signed-c waits its turn,
        # a small signed event still fits.
        await senders.open("/v1/sources/signed-b/events", _forged_signature_headers(BODY_BYTES), b" " * 1000)

        async def total_full() -> bool:
            return await probe("signed-c") == 503

        await until(total_full, timeout=5)
        assert await signed_event("signed-c", "c-1") == 202
    finally:
        senders.close()

    # The stalled senders are gone: their budget is back.
    async def accepted_again() -> bool:
        return await signed_event("signed-a", f"a-{uuid.uuid4().hex}") == 202

    await until(accepted_again, timeout=5)
    assert await probe("signed-c") == 401


# ------------------------------------------------------------------------ item 16: multipart parts


async def test_thousands_of_empty_multipart_parts_are_refused_quickly(relay: App) -> None:
    boundary = "b0undary"
    empty = f'--{boundary}\r\nContent-Disposition: form-data; name="x"\r\n\r\n\r\n'.encode()
    body = empty * 9000 + f"--{boundary}--\r\n".encode()
    assert len(body) > 500_000
    started = time.monotonic()
    async with relay.client.post(
        "/ion/halloran-ion/service/v3/multipartMessage",
        data=body,
        headers={"Authorization": ION_AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    ) as r:
        answer = await r.json()
        assert (r.status, answer["error"]) == (413, "too_many_parts")
    assert time.monotonic() - started < 0.5
    assert "16 parts" in answer["message"]


# ------------------------------------------------------------------------ memory of a real `relay serve`


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


async def test_stalled_unverified_bodies_cost_bounded_memory_that_comes_back(tmp_path: Path) -> None:
    data = base_config(tmp_path, sources=SOURCES[:2])  # hub and signed-a, default budgets (16 MiB a source)
    config_path = write_config(tmp_path, data)
    size = 1024 * 1024
    with relay_process(config_path, tmp_path) as relay:
        await relay.wait_ready()
        host, port = relay.base_url.removeprefix("http://").rsplit(":", 1)

        async def send(body_bytes: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection(host, int(port))
            head = "POST /v1/sources/signed-a/events HTTP/1.1\r\nHost: relay\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in _forged_signature_headers(size).items()
            )
            writer.write(head.encode() + b"\r\n" + b" " * body_bytes)
            await writer.drain()
            return reader, writer

        async def finished() -> float:
            async with aiohttp.ClientSession() as session, session.get(relay.base_url + "/metrics") as r:
                return _sample(await r.text(), 'relay_ingest_duration_seconds_count{source="signed-a"}')

        for _ in range(2):  # warm-up: complete bodies, refused once read
            reader, writer = await send(size)
            assert (await _answer(reader))[0] == 401
            writer.close()
        before = _rss_bytes(relay.pid)
        for _ in range(2):
            done = await finished()
            # 40 senders without credentials stall 10 bytes before the end of a 1 MiB body.
            connections = [await send(size - 10) for _ in range(40)]
            answers = await asyncio.gather(*(_answer(r, timeout_s=5) for r, _ in connections[16:]))
            assert {status for status, _, _ in answers} == {503}  # past the 16 MiB of the source: not read
            peak = _rss_bytes(relay.pid)
            for _, writer in connections:
                writer.close()

            async def all_done(done: float = done) -> bool:
                return await finished() == done + 40

            await until(all_done, timeout=10)
            await until(lambda: _rss_bytes(relay.pid) < before + 4 * size, timeout=10)
            assert peak < before + 40 * size
        assert "unhandled error" not in relay.log_text()

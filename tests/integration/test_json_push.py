"""JSON event push against the real app (127.0.0.1) and a real SQLite file."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import App, make_app
from helpers import HUB_TOKEN, WHSEC, base_config, sample_event
from standardwebhooks import Webhook

from relay.store import EventFilter

AUTH = {"Authorization": f"Bearer {HUB_TOKEN}"}
CHANNELS = ["customer/synced", "customer/deleted", "order/synced", "invoice/synced", "inventory/synced"]


async def post(
    app: App,
    body: Any,
    *,
    path: str = "/v1/sources/hub/events",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    hdrs = {"Content-Type": "application/json", **AUTH, **(headers or {})}
    data = raw if raw is not None else orjson.dumps(body)
    async with app.client.post(path, data=data, headers=hdrs) as resp:
        text = await resp.read()
        return resp.status, (orjson.loads(text) if text else {})


@pytest.mark.parametrize("channel", CHANNELS)
async def test_valid_event_per_channel_is_accepted_once(app: App, channel: str) -> None:
    event = sample_event(channel, event_id=f"evt-{channel}")
    status, body = await post(app, event)
    assert (status, body["status"], body["eventId"]) == (202, "accepted", event["eventId"])
    status, body = await post(app, event)
    assert (status, body) == (200, {"eventId": event["eventId"], "status": "duplicate"})
    stored = await app.store.list_events(EventFilter(limit=10))
    assert [(e.event_id, e.channel) for e in stored] == [(event["eventId"], channel)]
    assert orjson.loads(stored[0].payload) == event


async def test_channel_in_path(app: App) -> None:
    status, body = await post(
        app, sample_event("invoice/synced", "inv-evt"), path="/v1/sources/hub/events/invoice/synced"
    )
    assert status == 202
    status, body = await post(
        app, sample_event("invoice/synced", "inv-evt-2"), path="/v1/sources/hub/events/order/synced"
    )
    assert status == 422
    assert body["details"][0]["path"] == "$.documentType"


async def test_entity_key_and_version_are_derived(app: App) -> None:
    await post(app, sample_event("inventory/synced", "inv-1", lastTransactionDate="2026-11-21T10:00:00Z"))
    await post(app, sample_event("order/synced", "so-1"))
    events = {e.event_id: e for e in await app.store.list_events(EventFilter())}
    assert (events["inv-1"].entity_key, events["inv-1"].version) == ("P-100|MAIN", "2026-11-21T10:00:00Z")
    assert (events["so-1"].entity_key, events["so-1"].version) == ("SO-1", "2026-11-20T09:41:56Z")
    assert events["so-1"].tenant_id == "HALLORAN"


async def test_fifty_concurrent_posts_of_one_event_accept_exactly_one(app: App) -> None:
    event = sample_event("order/synced", "race-1")
    results = await asyncio.gather(*(post(app, event) for _ in range(50)))
    statuses = sorted(status for status, _ in results)
    assert statuses.count(202) == 1
    assert statuses.count(200) == 49
    assert await app.store.count_events() == 1


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda e: e.pop("timestamp"), "$"),
        (lambda e: e["data"].__setitem__("totalAmount", "lots"), "$.data.totalAmount"),
        (lambda e: e.__setitem__("timestamp", "yesterday"), "$.timestamp"),
        (lambda e: e.__setitem__("documentType", "SyncSpaceship"), "$.documentType"),
        (lambda e: e.pop("documentType"), "$.documentType"),
        (lambda e: e.pop("eventId"), "$"),
    ],
    ids=["missing-required", "wrong-type", "bad-date-time", "unknown-documentType", "no-documentType", "no-eventId"],
)
async def test_schema_failures_are_422_with_path_and_quarantined(app: App, mutate: Any, path: str) -> None:
    event = sample_event("order/synced", "bad-1")
    mutate(event)
    status, body = await post(app, event)
    assert status == 422
    assert body["error"] == "invalid_payload"
    assert path in [d["path"] for d in body["details"]]
    row = await app.store.get_quarantine(body["quarantineId"])
    assert row is not None
    assert row.body == orjson.dumps(event)
    assert row.reason
    assert await app.store.count_events() == 0


async def test_unknown_channel_in_path_is_404_and_quarantined(app: App) -> None:
    status, body = await post(app, sample_event(), path="/v1/sources/hub/events/spaceship/launched")
    assert status == 404
    assert body["error"] == "unknown_channel"
    assert body["details"][0]["path"] == "$"
    assert (await app.store.get_quarantine(body["quarantineId"])) is not None


async def test_unknown_source_is_401_like_bad_credentials(app: App) -> None:
    status, body = await post(app, sample_event(), path="/v1/sources/nope/events")
    assert (status, body["error"]) == (401, "unauthorized")


@pytest.mark.parametrize(
    ("raw", "headers", "status"),
    [
        (b"{not json", {}, 400),
        (b"", {}, 400),
        (b"   ", {}, 400),
        (b'{"a":1}', {"Content-Type": "text/plain"}, 415),
        (b'{"a":1}', {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        (b'{"a":1}', {"Authorization": "Bearer wrong"}, 401),
        (b'{"a":1}', {"Authorization": "Basic Zm9vOmJhcg=="}, 401),
        (b"[1,2,3]", {}, 422),
        (b'"text"', {}, 422),
    ],
    ids=["malformed", "empty", "blank", "text-plain", "form", "bad-token", "basic-instead", "array", "string"],
)
async def test_bad_requests_get_the_documented_status(
    app: App, raw: bytes, headers: dict[str, str], status: int
) -> None:
    got, body = await post(app, None, raw=raw, headers=headers)
    assert got == status
    assert body["error"]
    assert await app.store.count_events() == 0


async def test_malformed_json_is_quarantined(app: App) -> None:
    status, body = await post(app, None, raw=b'{"eventId": "x",')
    assert status == 400
    row = await app.store.get_quarantine(body["quarantineId"])
    assert row is not None
    assert row.body == b'{"eventId": "x",'


async def test_missing_token_is_401(app: App) -> None:
    async with app.client.post("/v1/sources/hub/events", data=b"{}", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 401
        assert "Bearer" in r.headers["WWW-Authenticate"]


async def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    data = base_config(tmp_path, server={"listen": "127.0.0.1:0", "max_body_bytes": 2048})
    application, _ = await make_app(tmp_path, data)
    try:
        event = sample_event("order/synced", "big", orderStatus="x" * 5000)
        status, body = await post(application, event)
        assert (status, body["error"]) == (413, "too_large")

        async def chunks() -> Any:  # no Content-Length: the limit holds while reading
            for _ in range(10):
                yield b" " * 1000

        async with application.client.post(
            "/v1/sources/hub/events", data=chunks(), headers={"Content-Type": "application/json", **AUTH}
        ) as resp:
            assert resp.status == 413
        assert await application.store.count_events() == 0
    finally:
        await application.client.close()
        await application.store.close()


@pytest.fixture
async def signed_app(tmp_path: Path) -> Any:
    data = base_config(tmp_path)
    data["sources"] = [{"name": "hub", "kind": "json-push", "auth": {"type": "standard-webhooks", "secret": WHSEC}}]
    application, _ = await make_app(tmp_path, data)
    yield application
    await application.client.close()
    await application.store.close()


def _signed_headers(body: bytes, *, ts: int | None = None, msg_id: str = "msg_1") -> dict[str, str]:
    from datetime import UTC, datetime

    ts = int(time.time()) if ts is None else ts
    signature = Webhook(WHSEC).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


async def test_standard_webhooks_signed_push(signed_app: App) -> None:
    body = orjson.dumps(sample_event("order/synced", "signed-1"))
    async with signed_app.client.post("/v1/sources/hub/events", data=body, headers=_signed_headers(body)) as r:
        assert r.status == 202
    tampered = body.replace(b"SO-1", b"SO-2")
    async with signed_app.client.post("/v1/sources/hub/events", data=tampered, headers=_signed_headers(body)) as r:
        assert r.status == 401
    stale = _signed_headers(body, ts=int(time.time()) - 600)
    async with signed_app.client.post("/v1/sources/hub/events", data=body, headers=stale) as r:
        assert r.status == 401
    async with signed_app.client.post(
        "/v1/sources/hub/events", data=body, headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 401
    assert await signed_app.store.count_events() == 1


async def test_health_and_metrics(app: App) -> None:
    await post(app, sample_event("order/synced", "m-1"))
    await post(app, sample_event("order/synced", "m-1"))
    async with app.client.get("/livez") as r:
        assert r.status == 200
    async with app.client.get("/readyz") as r:
        assert r.status == 200
    async with app.client.get("/metrics") as r:
        text = await r.text()
    assert 'relay_events_received_total{channel="order/synced",result="accepted",source="hub"}' in text
    assert 'relay_events_received_total{channel="order/synced",result="duplicate",source="hub"}' in text
    assert "relay_ingest_duration_seconds_bucket" in text
    assert "relay_store_commit_batch_size_bucket" in text


async def test_draining_answers_503_with_retry_after(app: App) -> None:
    app.runtime.draining = True
    async with app.client.post(
        "/v1/sources/hub/events",
        data=orjson.dumps(sample_event()),
        headers={"Content-Type": "application/json", **AUTH},
    ) as r:
        assert r.status == 503
        assert r.headers["Retry-After"] == "1"
    async with app.client.get("/readyz") as r:
        assert r.status == 503

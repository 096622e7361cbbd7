"""The admin API's OpenAPI document is valid OpenAPI 3.1, generated from the route table, and every view the
admin API answers with matches the model it is described by."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from openapi_spec_validator import validate
from pydantic import BaseModel

from relay.events import Event
from relay.http.admin import ROUTES, add_routes, openapi_document_of_admin_api
from relay.ops import (
    Attempt,
    DeliveryDetail,
    DeliveryRecord,
    EventDetail,
    EventFeed,
    QuarantineRecord,
    ReplayCount,
    SubscriberHealth,
)
from relay.views import (
    AttemptView,
    DeliveryDetailView,
    DeliveryView,
    EventDetailView,
    EventFeedView,
    EventView,
    QuarantineView,
    ReplayView,
    SubscriberView,
    attempt_json,
    delivery_detail_json,
    delivery_json,
    event_detail_json,
    event_feed_json,
    event_json,
    quarantine_json,
    replay_json,
    subscriber_json,
)

AT = datetime(2026, 11, 20, 9, 41, 56, 123000, tzinfo=UTC)


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document_of_admin_api()
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on any structural problem


def test_every_admin_route_is_in_the_document_and_nothing_else() -> None:
    app = web.Application()
    add_routes(app)
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    document = openapi_document_of_admin_api()
    described = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert served == described
    assert ("get", "/v1/admin/openapi.json") in described
    assert len(ROUTES) == len(described)
    for path, ops in document["paths"].items():
        for op in ops.values():
            assert "200" in op["responses"], path
            assert "401" in op["responses"], path  # every admin route needs the token


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        return {node["$ref"]} if "$ref" in node else {r for v in node.values() for r in _refs(v)}
    if isinstance(node, list):
        return {r for v in node for r in _refs(v)}
    return set()


def test_every_reference_resolves() -> None:
    document = openapi_document_of_admin_api()
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


EVENT = Event(
    event_id="e-1",
    channel="order/synced",
    source="hub",
    tenant_id=None,
    entity_key="SO-1",
    version="1",
    occurred_at=AT,
    received_at=AT,
    payload=b'{"eventId":"e-1","data":{"n":1}}',
    original=b"<SyncSalesOrder/>",
    original_type="application/xml",
)
PENDING = DeliveryRecord(
    id=7,
    event_id="e-1",
    subscriber="s",
    channel="order/synced",
    entity_key=None,
    state="pending",
    attempts=1,
    created_at=AT,
    next_attempt_at=AT,
    replay=False,
    last_status=503,
    last_error="HTTP 503",
    finished_at=None,
)
ATTEMPT = Attempt(attempt=1, started_at=AT, duration_ms=12.5, status=None, error="timeout", response_excerpt=None)
QUARANTINED = QuarantineRecord(
    id=3,
    received_at=AT,
    source="hub",
    channel=None,
    reason="invalid JSON",
    details=[{"path": "$", "message": "x"}],
    content_type="application/json",
    size=1,
)


@pytest.mark.parametrize(
    ("model", "view"),
    [
        (EventView, event_json(EVENT, with_payload=False)),
        (EventDetailView, event_detail_json(EventDetail(EVENT, [PENDING]))),
        (
            EventDetailView,
            event_detail_json(EventDetail(dataclasses.replace(EVENT, original=None, original_type=None), [])),
        ),
        (EventFeedView, event_feed_json(EventFeed([EVENT], 42))),
        (DeliveryView, delivery_json(PENDING)),
        (DeliveryDetailView, delivery_detail_json(DeliveryDetail(PENDING, [ATTEMPT]))),
        (AttemptView, attempt_json(ATTEMPT)),
        (QuarantineView, quarantine_json(QUARANTINED)),
        (QuarantineView, quarantine_json(dataclasses.replace(QUARANTINED, body=b"{"))),
        (SubscriberView, subscriber_json(SubscriberHealth("s", "https://x.example/h", False, None, 1, 2, "open", AT))),
        (ReplayView, replay_json(ReplayCount(3, 4, True))),
    ],
)
def test_each_view_matches_its_model(model: type[BaseModel], view: dict[str, Any]) -> None:
    assert model.model_validate(view).model_dump(by_alias=True, exclude_unset=True) == view

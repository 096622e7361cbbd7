"""Hypothesis throws arbitrary bytes and JSON at the ingest endpoint: never a 5xx, never a crash."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import orjson
import pytest
from conftest import make_app
from helpers import HUB_TOKEN, base_config, sample_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("RELAY_FUZZ_EXAMPLES", "150"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "eventId": st.text(max_size=300) | st.integers(-(2**63), 2**63 - 1),
        "documentType": st.sampled_from(["SyncSalesOrder", "SyncInventory", "DeleteCustomerPartyMaster", "X"])
        | json_values,
        "tenantId": json_values,
        "timestamp": st.sampled_from(["2026-11-20T09:41:56Z", "nope"]) | json_values,
        "data": json_values,
    },
)
paths = st.sampled_from(
    [
        "/v1/sources/hub/events",
        "/v1/sources/hub/events/order/synced",
        "/v1/sources/hub/events/x%00y",
        "/v1/sources/hub/events/inventory/synced",
    ]
)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "", "application/cloudevents+json"]
)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("fuzz")
    loop = asyncio.new_event_loop()
    app, _ = loop.run_until_complete(make_app(tmp, base_config(tmp)))
    yield loop, app
    loop.run_until_complete(app.client.close())
    loop.run_until_complete(app.store.close())
    loop.close()


def _post(fuzz_app: Any, path: str, body: bytes, content_type: str) -> int:
    loop, app = fuzz_app
    headers = {"Authorization": f"Bearer {HUB_TOKEN}"}
    if content_type:
        headers["Content-Type"] = content_type

    async def go() -> int:
        async with app.client.post(path, data=body, headers=headers) as resp:
            await resp.read()
            return int(resp.status)

    return loop.run_until_complete(go())


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2000), path=paths, content_type=content_types)
def test_arbitrary_bytes_never_5xx(fuzz_app: Any, body: bytes, path: str, content_type: str, caplog: Any) -> None:
    with caplog.at_level(logging.ERROR):
        status = _post(fuzz_app, path, body, content_type)
    assert status < 500, status
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=event_like | json_values, path=paths)
def test_arbitrary_json_never_5xx(fuzz_app: Any, payload: Any, path: str, caplog: Any) -> None:
    with caplog.at_level(logging.ERROR):
        status = _post(fuzz_app, path, orjson.dumps(payload), "application/json")
    assert status in (200, 202, 400, 404, 422), status
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_mutated_valid_events_never_5xx(fuzz_app: Any, data: dict[str, Any]) -> None:
    event = sample_event("order/synced", "fz")
    event["data"].update(data)
    event["eventId"] = f"fz-{abs(hash(orjson.dumps(event, option=orjson.OPT_SORT_KEYS)))}"
    status = _post(fuzz_app, "/v1/sources/hub/events", orjson.dumps(event), "application/json")
    assert status in (200, 202, 422), status

"""Infor ION IMS push into `relay serve`: the simulator's traffic, hostile XML, and the protocol routes."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import App, make_app
from helpers import arun_cli, base_config, relay_process, until, write_config
from subscriber import Subscriber, subscriber_config

from relay.sim.ion import BodFactory, make_ims_message, plan_ims_traffic, push_bods
from relay.spec import builtin_spec_paths, load_specs

ION_USER, ION_PASSWORD = "ion", "ion-gateway-password"
ION_SOURCE = {
    "name": "halloran-ion",
    "kind": "ion-ims",
    "auth": {"type": "basic", "username": ION_USER, "password": ION_PASSWORD},
}


async def test_simulator_traffic_into_relay_serve(tmp_path: Path) -> None:
    xml_sub, json_sub = Subscriber(), Subscriber()
    for s in (xml_sub, json_sub):
        await s.start()
    data = base_config(
        tmp_path,
        sources=[ION_SOURCE],
        subscribers=[
            subscriber_config("json", json_sub.url, max_in_flight=32),
            subscriber_config("xml", xml_sub.url, channels=["order/*"], format="xml", max_in_flight=32),
        ],
    )
    config_path = write_config(tmp_path, data)
    plan = plan_ims_traffic(1000, seed=11)
    kinds = [m.kind for m in plan]
    assert (kinds.count("duplicate"), kinds.count("malformed"), kinds.count("out_of_order")) == (100, 20, 50)
    assert sum(m.encoding == "DEFLATE" for m in plan) == 100
    expected = {eid for m in plan if m.kind in ("new", "out_of_order") for eid in m.expected_event_ids}
    try:
        with relay_process(config_path, tmp_path) as relay:
            await relay.wait_ready()
            async with aiohttp.ClientSession() as session:
                results = await push_bods(
                    f"{relay.base_url}/ion/halloran-ion", plan, session=session, auth=(ION_USER, ION_PASSWORD)
                )
            await until(lambda: set(json_sub.delivered_ids()) >= expected, timeout=60)
            listed = await arun_cli("events", "list", "-c", str(config_path), "--json", "--limit", "100000")
            quarantined = await arun_cli("quarantine", "list", "-c", str(config_path), "--json", "--limit", "1000")
    finally:
        for s in (xml_sub, json_sub):
            await s.stop()
    for result in results:
        if result.message.kind == "malformed":
            assert result.status == 400, result.body
        elif result.message.kind == "duplicate":
            assert result.status == 200, result.body
        else:
            assert result.status == 202, result.body
    events = json.loads(listed.stdout)
    assert {e["eventId"] for e in events} == expected
    assert len(events) == len(expected)  # each distinct BOD entity exactly once
    assert len(json.loads(quarantined.stdout)) == 20
    specs = load_specs(builtin_spec_paths())
    for r in json_sub.delivered:
        assert r.verified
        assert specs.validate(r.headers["relay-channel"], r.payload) == []
    # format: xml subscribers get the original BOD bytes, signed over those bytes.
    assert xml_sub.delivered
    for r in xml_sub.delivered:
        assert r.verified
        assert r.headers["content-type"].startswith("application/xml")
        assert r.body.lstrip().startswith(b"<")


@pytest.fixture
async def ion_app(tmp_path: Path) -> Any:
    application, _ = await make_app(tmp_path, base_config(tmp_path, sources=[ION_SOURCE]))
    yield application
    await application.client.close()
    await application.store.close()


def _auth_header() -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{ION_USER}:{ION_PASSWORD}".encode()).decode()}


async def _push_xml(app: App, xml: bytes, document: str = "Sync.SalesOrder") -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field(
        "ParameterRequest",
        json.dumps({"documentName": document, "messageId": "m1", "encoding": "NONE"}),
        content_type="application/json",
    )
    form.add_field("MessagePayload", xml, content_type="application/xml", filename="bod.xml")
    async with app.client.post(
        "/ion/halloran-ion/service/v3/multipartMessage", data=form, headers={**_auth_header(), "X-TenantId": "HALLORAN"}
    ) as r:
        return r.status, await r.json()


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<SyncSalesOrder>&lol9;</SyncSalesOrder>"""
XXE = b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><SyncSalesOrder>&xxe;</SyncSalesOrder>"""
DEEP = b"<SyncSalesOrder>" + b"<a>" * 10_000 + b"</a>" * 10_000 + b"</SyncSalesOrder>"


@pytest.mark.parametrize("xml", [BILLION_LAUGHS, XXE, DEEP], ids=["billion-laughs", "external-entity", "deep"])
async def test_hostile_xml_is_refused_quickly_without_memory_growth(ion_app: App, xml: bytes) -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    status, body = await _push_xml(ion_app, xml)
    assert time.monotonic() - started < 1.0
    assert (status, body["error"]) == (400, "malformed_xml")
    assert "root:" not in json.dumps(body)  # nothing of /etc/passwd leaks into the answer
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 20_000  # KiB
    row = await ion_app.store.get_quarantine(body["quarantineId"])
    assert row is not None
    assert await ion_app.store.count_events() == 0


async def test_protocol_routes_auth_and_document_filter(ion_app: App) -> None:
    async with ion_app.client.get("/ion/halloran-ion/service/ping") as r:
        assert r.status == 401
    async with ion_app.client.get("/ion/halloran-ion/service/ping", headers=_auth_header()) as r:
        assert r.status == 200
    async with ion_app.client.get("/ion/halloran-ion/service/protocol", headers=_auth_header()) as r:
        assert (await r.json())["version"] == "v3"
    async with ion_app.client.post("/ion/halloran-ion/service/v2/discovery", headers=_auth_header()) as r:
        assert "Sync.SalesOrder" in (await r.json())["acceptedDocuments"]
    async with ion_app.client.post("/ion/nope/service/v3/multipartMessage", headers=_auth_header()) as r:
        assert r.status == 401  # like bad credentials: source names cannot be probed
    bod = BodFactory(seed=3).sales_order()
    status, body = await _push_xml(ion_app, bod.xml, document="Process.PurchaseOrder")
    assert (status, body["error"]) == (412, "document_not_accepted")
    message = make_ims_message(bod, encoding="DEFLATE")
    async with aiohttp.ClientSession() as session:
        (result,) = await push_bods(
            str(ion_app.client.make_url("/ion/halloran-ion")), [message], session=session, auth=(ION_USER, ION_PASSWORD)
        )
        (again,) = await push_bods(
            str(ion_app.client.make_url("/ion/halloran-ion")), [message], session=session, auth=(ION_USER, ION_PASSWORD)
        )
    assert (result.status, again.status) == (202, 200)
    async with ion_app.client.post(
        "/ion/halloran-ion/service/v3/multipartMessage",
        data=b"not multipart",
        headers={**_auth_header(), "Content-Type": "text/plain"},
    ) as r:
        assert r.status == 400


async def _post_parts(app: App, path: str, fields: list[tuple[str, bytes, str]]) -> tuple[int, dict[str, Any]]:
    writer = aiohttp.MultipartWriter("form-data")
    for name, data, content_type in fields:
        part = writer.append(data, {"Content-Type": content_type})
        part.set_content_disposition("form-data", name=name)
    async with app.client.post(
        f"/ion/halloran-ion/service/{path}", data=writer, headers={**_auth_header(), "X-TenantId": "HALLORAN"}
    ) as r:
        return r.status, await r.json()


def _params(bod: Any, **extra: Any) -> bytes:
    return json.dumps({"documentName": bod.document_name, "messageId": "m-1", "encoding": "NONE", **extra}).encode()


@pytest.mark.parametrize("order", ["parameters-first", "payload-first"])
async def test_ims_v2_sends_both_parts_under_one_name(ion_app: App, order: str) -> None:
    bod = BodFactory(seed=5).purchase_order()
    fields = [("ParameterRequest", _params(bod), "application/json"), ("ParameterRequest", bod.xml, "application/xml")]
    if order == "payload-first":
        fields.reverse()  # told apart by content type
    status, body = await _post_parts(ion_app, "v2/multipartMessage", fields)
    assert (status, body["status"]) == (202, "accepted")
    event = await ion_app.store.get_event(body["events"][0]["eventId"])
    assert event is not None
    assert event.channel == "purchaseorder/synced"


async def test_v3_discovery_and_the_message_multipart_method(ion_app: App) -> None:
    async with ion_app.client.get("/ion/halloran-ion/service/protocol", headers=_auth_header()) as r:
        assert (await r.json())["hasDiscovery"] is True
    async with ion_app.client.post(
        "/ion/halloran-ion/service/v3/discovery", headers={**_auth_header(), "X-TenantId": "HALLORAN"}
    ) as r:
        assert r.status == 200
        documents = (await r.json())["acceptedDocuments"]
    assert {"Sync.PurchaseOrder", "Sync.ReceiveDelivery", "Sync.SupplierPartyMaster"} <= set(documents)
    bod = BodFactory(seed=6).receipt()
    status, body = await _post_parts(
        ion_app,
        "v3/message/multipart",
        [("ParameterRequest", _params(bod), "application/json"), ("MessagePayload", bod.xml, "application/xml")],
    )
    assert (status, body["status"]) == (202, "accepted")


async def test_batch_parameters_and_character_set(ion_app: App) -> None:
    factory = BodFactory(seed=7)
    bod = factory.supplier()
    status, body = await _post_parts(
        ion_app,
        "v3/multipartMessage",
        [
            ("ParameterRequest", _params(bod, batchSequence="x"), "application/json"),
            ("MessagePayload", bod.xml, "application/xml"),
        ],
    )
    assert (status, body["error"]) == (400, "malformed_parameters")
    assert "batchSequence must be a whole number" in body["message"]
    status, body = await _post_parts(
        ion_app,
        "v3/multipartMessage",
        [
            ("ParameterRequest", _params(bod, batchId="b-1", batchAbortIndicator=True), "application/json"),
            ("MessagePayload", bod.xml, "application/xml"),
        ],
    )
    assert (status, body["status"]) == (200, "discarded")
    assert await ion_app.store.count_events() == 0
    # A Latin-1 payload without an XML declaration is read in the IMS characterSet.
    latin = bod.xml.split(b"\n", 1)[1].replace(b"Wire", "Drähte".encode()).decode("utf-8").encode("latin-1")
    params = _params(bod, characterSet="ISO-8859-1", batchId="b-2", batchSequence=1, batchSize=1)
    status, body = await _post_parts(
        ion_app,
        "v3/multipartMessage",
        [("ParameterRequest", params, "application/json"), ("MessagePayload", latin, "application/xml")],
    )
    assert status == 202, body
    event = await ion_app.store.get_event(body["events"][0]["eventId"])
    assert event is not None
    assert "Drähte" in orjson.loads(event.payload)["data"]["vendorName"]
    status, body = await _post_parts(
        ion_app,
        "v3/multipartMessage",
        [
            ("ParameterRequest", _params(bod, characterSet="no-such-charset"), "application/json"),
            ("MessagePayload", bod.xml, "application/xml"),
        ],
    )
    assert (status, body["error"]) == (400, "malformed_parameters")

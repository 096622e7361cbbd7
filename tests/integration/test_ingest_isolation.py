"""One bad event never hurts another: hostile values are refused on their own, before they join a write batch."""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import App, make_app, start_stack, stop_stack
from helpers import HUB_TOKEN, base_config, sample_event, until
from subscriber import Subscriber, subscriber_config

from relay.sim.ion import BodFactory, make_ims_message, push_bods

AUTH = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}
ION_USER, ION_PASSWORD = "ion", "ion-gateway-password"
ION_SOURCE = {
    "name": "halloran-ion",
    "kind": "ion-ims",
    "auth": {"type": "basic", "username": ION_USER, "password": ION_PASSWORD},
}
# Valid ISO 8601 text whose UTC instant falls before year 1 or after year 9999.
BEFORE_YEAR_ONE = "0001-01-01T00:30:00+01:00"
AFTER_YEAR_9999 = "9999-12-31T23:30:00-01:00"


async def post_raw(app: App, body: bytes, path: str = "/v1/sources/hub/events") -> tuple[int, dict[str, Any]]:
    async with app.client.post(path, data=body, headers=AUTH) as resp:
        return resp.status, orjson.loads(await resp.read())


async def post(app: App, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return await post_raw(app, orjson.dumps(event))


def good_events(count: int, prefix: str) -> list[dict[str, Any]]:
    return [sample_event("customer/synced", f"{prefix}-{i}", customerNumber=f"C{prefix}{i}") for i in range(count)]


async def assert_refused_alone(app: App, poison: dict[str, Any], path: str) -> None:
    """20 good events and the poison sent at once: the poison alone is refused, twice, naming `path`."""
    goods = good_events(20, poison["eventId"].encode().hex()[:12])
    answers = await asyncio.gather(*(post(app, e) for e in [*goods[:10], poison, *goods[10:]]))
    poison_status, poison_body = answers[10]
    assert [status for status, _ in answers[:10] + answers[11:]] == [202] * 20
    assert poison_status == 422, poison_body
    assert (poison_body["error"], poison_body["details"][0]["path"]) == ("invalid_payload", path)
    assert await app.store.get_quarantine(poison_body["quarantineId"]) is not None
    again_status, again_body = await post(app, poison)
    assert (again_status, again_body["details"][0]["path"]) == (422, path)


async def test_out_of_range_last_modified_is_refused_alone(app: App) -> None:
    poison = sample_event("customer/synced", "poison-lm", lastModified=BEFORE_YEAR_ONE)
    await assert_refused_alone(app, poison, "$.data.lastModified")


async def test_nul_in_event_id_is_refused_alone(app: App) -> None:
    poison = sample_event("customer/synced", "poison\u0000id")
    await assert_refused_alone(app, poison, "$.eventId")


async def test_out_of_range_envelope_timestamp_is_422(app: App) -> None:
    event = sample_event("order/synced", "late-ts")
    status, body = await post(app, {**event, "timestamp": AFTER_YEAR_9999})
    assert (status, body["details"][0]["path"]) == (422, "$.timestamp")
    status, body = await post(app, {**event, "timestamp": BEFORE_YEAR_ONE})
    assert (status, body["details"][0]["path"]) == (422, "$.timestamp")


@pytest.mark.parametrize(
    "event_id",
    ["line\nbreak", "with space", "caf\u00e9", "tab\tid", "del\x7fid", "x" * 257, "", " "],
    ids=["newline", "space", "non-ascii", "tab", "del", "257-chars", "empty", "blank"],
)
async def test_event_ids_outside_printable_ascii_are_422(app: App, event_id: str) -> None:
    status, body = await post(app, sample_event("order/synced", event_id))
    assert (status, body["details"][0]["path"]) == (422, "$.eventId"), body
    assert await app.store.count_events() == 0


async def test_every_printable_ascii_character_is_a_valid_event_id(app: App) -> None:
    printable = "".join(chr(c) for c in range(0x21, 0x7F))
    ids = [printable, ("id-" + printable * 3)[:256]]
    for event_id in ids:
        status, body = await post(app, sample_event("order/synced", event_id))
        assert (status, body["eventId"]) == (202, event_id)
        assert (await app.store.get_event(event_id)) is not None


async def test_huge_integer_is_refused_not_rounded(app: App) -> None:
    event = sample_event("order/synced", "big-int")
    body = orjson.dumps(event).replace(b'"totalAmount":120.5', b'"totalAmount":1000000000000000000000000000000')
    status, answer = await post_raw(app, body)
    assert (status, answer["details"][0]["path"]) == (422, "$.data.totalAmount"), answer
    assert await app.store.count_events() == 0


async def test_decimal_beyond_double_precision_is_refused_not_rounded(app: App) -> None:
    event = sample_event("order/synced", "long-decimal")
    body = orjson.dumps(event).replace(b'"totalAmount":120.5', b'"totalAmount":123456789012345678.25')
    status, answer = await post_raw(app, body)
    assert (status, answer["details"][0]["path"]) == (422, "$.data.totalAmount"), answer


async def test_long_digit_strings_and_exact_numbers_are_delivered_as_sent(tmp_path: Path) -> None:
    receiver = Subscriber()
    await receiver.start()
    stack = await start_stack(tmp_path, base_config(tmp_path, subscribers=[subscriber_config("s", receiver.url)]))
    try:
        event = sample_event("order/synced", "exact", orderNumber="123456789012345678901234567890")
        body = orjson.dumps(event).replace(b'"totalAmount":120.5', b'"totalAmount":18446744073709551615')
        status, _ = await post_raw(stack, body)
        assert status == 202
        await until(lambda: receiver.delivered_ids() == ["exact"], timeout=10)
    finally:
        await stop_stack(stack)
        await receiver.stop()
    delivered = receiver.delivered[0].body
    assert b'"totalAmount":18446744073709551615' in delivered
    assert b'"orderNumber":"123456789012345678901234567890"' in delivered


# --- ION IMS push -------------------------------------------------------------------------------------


@pytest.fixture
async def ion_app(tmp_path: Path) -> Any:
    application, _ = await make_app(tmp_path, base_config(tmp_path, sources=[ION_SOURCE]))
    yield application
    await application.client.close()
    await application.store.close()


def _basic() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{ION_USER}:{ION_PASSWORD}".encode()).decode()}


async def push_params(app: App, params: dict[str, Any], xml: bytes) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("ParameterRequest", orjson.dumps(params).decode(), content_type="application/json")
    form.add_field("MessagePayload", xml, content_type="application/xml", filename="bod.xml")
    async with app.client.post(
        "/ion/halloran-ion/service/v3/multipartMessage", data=form, headers={**_basic(), "X-TenantId": "HALLORAN"}
    ) as r:
        return r.status, await r.json()


_ORDER_NUMBERS = itertools.count(5_000_000)


def _unique_order(factory: BodFactory) -> Any:
    return factory.sales_order(f"{next(_ORDER_NUMBERS)}-00")


async def push_with_goods(app: App, params: dict[str, Any], xml: bytes) -> tuple[int, dict[str, Any]]:
    """Push the message at the same moment as ten new good BODs; every good one must be accepted."""
    factory = BodFactory(seed=len(xml))
    goods = [make_ims_message(_unique_order(factory)) for _ in range(10)]
    url = str(app.client.make_url("/ion/halloran-ion"))
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(push_bods(url, [m], session=session, auth=(ION_USER, ION_PASSWORD)) for m in goods),
            push_params(app, params, xml),
        )
    good_statuses = [r[0].status for r in results[:-1]]  # type: ignore[index]
    assert good_statuses == [202] * 10
    answer: tuple[int, dict[str, Any]] = results[-1]  # type: ignore[assignment]
    return answer


def _order_bod(seed: int) -> tuple[dict[str, Any], bytes]:
    message = make_ims_message(_unique_order(BodFactory(seed=seed)))
    return dict(message.parameters), message.payload


@pytest.mark.parametrize("where", ["bod", "ims"])
async def test_out_of_range_variation_is_refused_alone(ion_app: App, where: str) -> None:
    params, xml = _order_bod(21)
    if where == "bod":
        xml = re.sub(rb'variationID="\d+"', f'variationID="{BEFORE_YEAR_ONE}"'.encode(), xml, count=1)
    else:
        xml = re.sub(rb' variationID="\d+"', b"", xml, count=1)
        params["variationId"] = BEFORE_YEAR_ONE
    for _ in range(2):
        status, body = await push_with_goods(ion_app, params, xml)
        assert (status, body["error"]) == (422, "invalid_payload"), body
        assert "variationId" in body["message"] or "variationID" in body["message"]
        assert await ion_app.store.get_quarantine(body["quarantineId"]) is not None


async def test_nul_in_ims_variation_id_is_refused_alone(ion_app: App) -> None:
    params, xml = _order_bod(22)
    xml = re.sub(rb' variationID="\d+"', b"", xml, count=1)
    params["variationId"] = "7\u00007"
    for _ in range(2):
        status, body = await push_with_goods(ion_app, params, xml)
        assert (status, body["error"]) == (422, "invalid_payload"), body
        assert "variationId" in body["message"]


@pytest.mark.parametrize("variation", [1e30, {"v": 1}, True], ids=["float", "object", "bool"])
async def test_ims_variation_id_that_is_not_a_string_or_integer_is_refused(ion_app: App, variation: Any) -> None:
    params, xml = _order_bod(23)
    xml = re.sub(rb' variationID="\d+"', b"", xml, count=1)
    params["variationId"] = variation
    status, body = await push_params(ion_app, params, xml)
    assert (status, body["error"]) == (422, "invalid_payload"), body
    assert await ion_app.store.count_events() == 0


@pytest.mark.parametrize("created", ["0001-01-01T00:00:00+01:00", AFTER_YEAR_9999])
async def test_out_of_range_creation_date_time_is_4xx(ion_app: App, created: str) -> None:
    params, xml = _order_bod(24)
    xml = re.sub(
        rb"<CreationDateTime>[^<]*</CreationDateTime>", f"<CreationDateTime>{created}</CreationDateTime>".encode(), xml
    )
    status, body = await push_params(ion_app, params, xml)
    assert 400 <= status < 500, body
    assert "CreationDateTime" in body["message"]


async def test_out_of_range_last_modification_in_a_bod_is_4xx(ion_app: App) -> None:
    message = make_ims_message(BodFactory(seed=25).customer_sync("C-LM-1"))
    params, xml = dict(message.parameters), message.payload
    assert b"<LastModificationDateTime>" in xml
    xml = re.sub(
        rb"<LastModificationDateTime>[^<]*</LastModificationDateTime>",
        f"<LastModificationDateTime>{BEFORE_YEAR_ONE}</LastModificationDateTime>".encode(),
        xml,
    )
    status, body = await push_with_goods(ion_app, params, xml)
    assert 400 <= status < 500, body
    assert "LastModificationDateTime" in body["message"]


async def test_huge_bod_number_is_refused_not_rounded(ion_app: App) -> None:
    params, xml = _order_bod(26)
    xml = re.sub(rb"(<TotalAmount[^>]*>)[^<]*<", rb"\g<1>1000000000000000000000000000000<", xml, count=1)
    status, body = await push_params(ion_app, params, xml)
    assert 400 <= status < 500, body
    assert "totalAmount" in body["message"]

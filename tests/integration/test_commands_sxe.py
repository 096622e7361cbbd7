"""Write-back to Infor SX.e through the ION API gateway simulator: orders created once (found again by their
customer PO after a timeout), `cErrorMessage` refusals, customer maintenance."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import start_stack, stop_stack
from helpers import base_config, until
from subscriber import Subscriber, subscriber_config

from relay.auth.ionapi import TokenManager, load_ionapi
from relay.commands.erp import sxe_request_tables
from relay.commands.executor import CommandExecutor
from relay.commands.mapping import mapping_for
from relay.sim.ion import IonSimulator, running_ion_simulator
from relay.sim.sxe import SxeSimulator
from relay.sim.x3 import running_x3_simulator

TOKEN = "storefront-token-0123456789"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
ORDER_LOAD = orjson.loads((FIXTURES / "sxe" / "sfoeordertotloadv4_request.json").read_bytes())
ORDER_LOADED = orjson.loads((FIXTURES / "sxe" / "sfoeordertotloadv4_response.json").read_bytes())
CUSTOMER_MNT = orjson.loads((FIXTURES / "sxe" / "arcustomermnt_request.json").read_bytes())
X3_ORDER = orjson.loads((FIXTURES / "x3" / "sorder_create.json").read_bytes())
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[SxeSimulator, IonSimulator, str]]:
    sxe = SxeSimulator(hang_s=3.0)
    sxe.seed_rows("arsc", 5)
    sxe.seed_rows("icsw", 9)
    async with running_ion_simulator() as (ion, base_url):
        sxe.install(ion)
        yield sxe, ion, base_url


async def run(tmp_path: Path, gateway: tuple[SxeSimulator, IonSimulator, str]) -> Any:
    _, ion, base_url = gateway
    ionapi = ion.write_ionapi(tmp_path / "halloran.ionapi", base_url)
    subscriber = Subscriber()
    hook = await subscriber.start()
    source = {
        "name": "halloran-sxe",
        "kind": "sxe",
        "ionapi_file": str(ionapi),
        "timezone": "America/Chicago",
        "timeout": "1s",
        "commands": {
            "auth": {"type": "bearer", "tokens": [TOKEN]},
            "retry": {"schedule": ["50ms", "100ms"], "max_age": "1h"},
            "lease": "5s",
        },
    }
    data = base_config(
        tmp_path,
        sources=[source],
        subscribers=[subscriber_config("shop", hook, channels=["order/created", "customer/*", "command/failed"])],
    )
    stack = await start_stack(tmp_path, data)
    executor = CommandExecutor(stack.runtime, poll_interval_s=0.05)
    await executor.start()
    return stack, executor, subscriber


async def post(stack: Any, command: str, body: dict[str, Any], key: str) -> dict[str, Any]:
    path = f"/v1/sources/halloran-sxe/commands/{command}"
    async with stack.client.post(path, data=orjson.dumps(body), headers={**HEADERS, "Idempotency-Key": key}) as r:
        assert r.status == 202, await r.text()
        return dict(orjson.loads(await r.read()))


async def finished(stack: Any, command_id: str) -> dict[str, Any]:
    async def status() -> dict[str, Any]:
        async with stack.client.get(f"/v1/commands/{command_id}", headers=HEADERS) as r:
            return dict(orjson.loads(await r.read()))

    async def done() -> bool:
        return (await status())["status"] in ("succeeded", "failed")

    await until(done, timeout=10)
    return await status()


def order(sxe: SxeSimulator, reference: str, item: str | None = None) -> dict[str, Any]:
    return {
        "customerNumber": str(sxe.tables["arsc"][1]["custno"]),
        "customerReference": reference,
        "warehouse": "MAIN",
        "lines": [{"partNumber": item or sxe.tables["icsw"][0]["prod"], "quantity": 4, "unitOfMeasure": "EA"}],
        "notes": "leave at dock 3",
    }


async def test_order_created_once_even_when_the_first_answer_never_comes(
    tmp_path: Path, gateway: tuple[SxeSimulator, IonSimulator, str]
) -> None:
    sxe = gateway[0]
    sxe.fail_after_create("timeout")
    stack, executor, subscriber = await run(tmp_path, gateway)
    try:
        accepted = await post(stack, "order/create", order(sxe, "WEB-1001"), "cart-1001")
        doc = await finished(stack, accepted["commandId"])
        assert doc["status"] == "succeeded"
        assert doc["attempts"] == 2
        assert doc["result"]["adopted"] is True
        (created,) = sxe.created_orders
        assert str(created["orderno"]) == doc["result"]["documentNumber"]
        assert created["custpo"] == "WEB-1001"
        first_line = created["lines"][0]
        assert (first_line["itemnumber"], first_line["orderqty"]) == (sxe.tables["icsw"][0]["prod"], 4)
        assert created["lines"][-1]["itemdesc1"] == "leave at dock 3"
        await until(lambda: subscriber.delivered, timeout=10)
        assert subscriber.delivered[0].payload["data"]["orderNumber"] == doc["result"]["documentNumber"]
        assert subscriber.delivered[0].verified
    finally:
        await executor.stop(1.0)
        await stop_stack(stack)
        await subscriber.stop()


async def test_c_error_message_fails_at_once_with_sxe_message(
    tmp_path: Path, gateway: tuple[SxeSimulator, IonSimulator, str]
) -> None:
    sxe = gateway[0]
    stack, executor, subscriber = await run(tmp_path, gateway)
    try:
        accepted = await post(stack, "order/create", order(sxe, "WEB-2", item="NO-SUCH"), "cart-2")
        doc = await finished(stack, accepted["commandId"])
        assert doc["status"] == "failed"
        assert doc["attempts"] == 1
        assert doc["error"]["erpMessages"] == ["Product NO-SUCH Not Set Up in Warehouse Products - ICSW (4602)"]
        assert sxe.created_orders == []
        await until(lambda: subscriber.delivered, timeout=10)
        assert subscriber.delivered[0].headers["relay-channel"] == "command/failed"
    finally:
        await executor.stop(1.0)
        await stop_stack(stack)
        await subscriber.stop()


async def test_customer_created_then_updated_in_order(
    tmp_path: Path, gateway: tuple[SxeSimulator, IonSimulator, str]
) -> None:
    sxe = gateway[0]
    stack, executor, subscriber = await run(tmp_path, gateway)
    try:
        created = await post(stack, "customer/create", {"name": "Brightline Electric", "phone": "2175550199"}, "c1")
        doc = await finished(stack, created["commandId"])
        assert doc["status"] == "succeeded"
        number = doc["result"]["documentNumber"]
        assert sxe.tables["arsc"][-1]["custno"] == int(number)
        updated = await post(stack, "customer/update", {"customerNumber": number, "creditStatus": "onHold"}, "c2")
        assert (await finished(stack, updated["commandId"]))["status"] == "succeeded"
        assert sxe.tables["arsc"][-1]["statustype"] == "onHold"
        await until(lambda: len(subscriber.delivered) == 2, timeout=10)
        channels = [r.headers["relay-channel"] for r in subscriber.delivered]
        assert channels == ["customer/created", "customer/updated"]
    finally:
        await executor.stop(1.0)
        await stop_stack(stack)
        await subscriber.stop()


def test_requests_the_relay_sends_have_the_shape_of_the_public_client() -> None:
    """Every table and key the relay sends to SX.e appears in the public client's request (tests/fixtures/sxe)."""
    public = ORDER_LOAD["request"]
    canonical = {
        "customerNumber": "10042",
        "customerReference": "PO-WEB-1001",
        "warehouse": "MAIN",
        "shipTo": {"name": "Volt Electric", "city": "Springfield"},
        "lines": [{"partNumber": "WIRE-12-2", "quantity": 4, "unitOfMeasure": "EA"}],
        "notes": "leave at dock 3",
    }
    ours = sxe_request_tables("order/create", mapping_for("sxe", "order/create"), canonical)
    assert set(ours) <= set(public)
    for table, wrapped in ours.items():
        (inner,) = wrapped
        assert inner in public[table]
    public_header = public["tInputheaderdata"]["t-inputheaderdata"][0]
    public_line_keys = {k for line in public["tInputlinedata"]["t-inputlinedata"] for k in line}
    assert set(ours["tInputheaderdata"]["t-inputheaderdata"][0]) - set(public_header) == set()
    assert {k for line in ours["tInputlinedata"]["t-inputlinedata"] for k in line} <= public_line_keys
    customer = CUSTOMER_MNT["request"]
    rows = sxe_request_tables("customer/create", mapping_for("sxe", "customer/create"), {"name": "Brightline"})
    assert set(rows["tMntTt"]["t-mnt-tt"][0]) == set(customer["tMntTt"]["t-mnt-tt"][0])


async def test_the_simulators_answer_the_public_shapes(tmp_path: Path) -> None:
    """The SX.e simulator answers an order load as the public client reads it; the X3 simulator creates the
    fixture order."""
    expected = ORDER_LOADED
    sxe = SxeSimulator()
    sxe.seed_rows("arsc", 1)
    sxe.seed_rows("icsw", 1)
    async with running_ion_simulator() as (ion, base_url), aiohttp.ClientSession() as session:
        sxe.install(ion)
        token = await TokenManager(load_ionapi(ion.write_ionapi(tmp_path / "h.ionapi", base_url)), session).token()
        body = orjson.loads(orjson.dumps(ORDER_LOAD))  # a copy to fill in
        header = body["request"]["tInputheaderdata"]["t-inputheaderdata"][0]
        header["customerid"] = sxe.tables["arsc"][0]["custno"]
        body["request"]["tInputlinedata"]["t-inputlinedata"][0]["itemnumber"] = sxe.tables["icsw"][0]["prod"]
        url = f"{base_url}/{ion.tenant}/SX/rest/sxapirestservice/sxapisfoeordertotloadv4"
        async with session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
            answer = await r.json()
        assert answer["response"]["cErrorMessage"] == ""
        (row,) = answer["response"]["tOrdloadhdrdata"]["t-ordloadhdrdata"]
        assert set(expected["response"]["tOrdloadhdrdata"]["t-ordloadhdrdata"][0]) <= set(row)
    async with running_x3_simulator() as (x3, url), aiohttp.ClientSession() as session:
        order = X3_ORDER
        auth = {"Authorization": "Basic " + base64.b64encode(f"{x3.user}:{x3.password}".encode()).decode()}
        create = f"{url}/api1/x3/erp/ALDGATE/SORDER?representation=SORDER.$create"
        async with session.post(create, json=order, headers=auth) as r:
            assert r.status == 201
            assert (await r.json())["CUSORDREF"] == "Q-2026-0042"


async def test_every_first_attempt_dropped_after_create_still_makes_one_order_each(
    tmp_path: Path, gateway: tuple[SxeSimulator, IonSimulator, str]
) -> None:
    sxe = gateway[0]
    sxe.after_create_rate, sxe.after_create_mode = 1.0, "drop"
    stack, executor, subscriber = await run(tmp_path, gateway)
    try:
        ids = [(await post(stack, "order/create", order(sxe, f"WEB-D{n}"), f"d{n}"))["commandId"] for n in range(3)]
        docs = [await finished(stack, command_id) for command_id in ids]
        assert [(d["status"], d["attempts"], d["result"]["adopted"]) for d in docs] == [("succeeded", 2, True)] * 3
        assert sorted(o["custpo"] for o in sxe.created_orders) == ["WEB-D0", "WEB-D1", "WEB-D2"]
    finally:
        await executor.stop(1.0)
        await stop_stack(stack)
        await subscriber.stop()

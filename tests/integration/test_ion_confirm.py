"""ConfirmBODs from `relay serve` back to ION for refused BODs, through the simulated ION API gateway."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
from helpers import arun_cli, base_config, free_port, relay_process, until, write_config

from relay.sim.ion import (
    DEFAULT_LOGICAL_ID,
    BodFactory,
    GeneratedBod,
    IonSimulator,
    make_ims_message,
    push_bods,
    running_ion_simulator,
)

ION_USER, ION_PASSWORD = "ion", "ion-gateway-password"
RELAY_LID = "lid://infor.erp-relay.relay"


def _source(ionapi: Path, **confirm: Any) -> dict[str, Any]:
    return {
        "name": "halloran-ion",
        "kind": "ion-ims",
        "auth": {"type": "basic", "username": ION_USER, "password": ION_PASSWORD},
        "confirm": {"ionapi_file": str(ionapi), "logical_id": RELAY_LID, **confirm},
    }


def _unmappable(bod: GeneratedBod, confirmation_code: str = "OnError") -> bytes:
    """The BOD with an order date no one can read (the relay refuses it) and the given ConfirmationCode."""
    xml = re.sub(rb"<OrderDateTime>[^<]*</OrderDateTime>", b"<OrderDateTime>next Tuesday</OrderDateTime>", bod.xml)
    code = f"<ConfirmationCode>{confirmation_code}</ConfirmationCode>".encode()
    return xml.replace(b"<ConfirmationCode>OnError</ConfirmationCode>", code)


def _bod_id(xml: bytes) -> str:
    match = re.search(rb"<BODID>([^<]+)</BODID>", xml)
    assert match is not None
    return match.group(1).decode().replace("&amp;", "&")


async def _push(base_url: str, *payloads: tuple[GeneratedBod, bytes]) -> list[int]:
    messages = [make_ims_message(bod, payload=xml, kind="malformed") for bod, xml in payloads]
    async with aiohttp.ClientSession() as session:
        results = await push_bods(
            f"{base_url}/ion/halloran-ion", messages, session=session, auth=(ION_USER, ION_PASSWORD)
        )
    return [r.status for r in results]


async def test_a_refused_bod_with_on_error_is_confirmed_once_and_never_is_not(tmp_path: Path) -> None:
    factory = BodFactory(5)
    never, on_error = factory.sales_order(), factory.sales_order()
    async with running_ion_simulator() as (ion, ion_url):
        ionapi = ion.write_ionapi(tmp_path / "ion.ionapi", ion_url)
        config_path = write_config(tmp_path, base_config(tmp_path, sources=[_source(ionapi)]))
        with relay_process(config_path, tmp_path) as relay:
            await relay.wait_ready()
            # Never first: the outbox is sent in order, so once the OnError one has arrived, the Never one
            # would have come before it.
            statuses = await _push(
                relay.base_url, (never, _unmappable(never, "Never")), (on_error, _unmappable(on_error))
            )
            await until(lambda: len(ion.confirms) >= 1, timeout=20)
            quarantined = await arun_cli("quarantine", "list", "-c", str(config_path), "--json")
    assert statuses == [400, 400]
    assert len(json.loads(quarantined.stdout)) == 2  # both kept, confirmed or not
    assert len(ion.confirms) == 1
    confirm = ion.confirms[0]
    assert confirm.original_bod_id == _bod_id(on_error.xml)
    assert confirm.original_sender == DEFAULT_LOGICAL_ID
    assert any("'next Tuesday' is not a date" in d for d in confirm.descriptions)
    assert confirm.sender == RELAY_LID
    assert confirm.parameters["documentName"] == "Confirm.BOD"
    assert confirm.parameters["fromLogicalId"] == RELAY_LID
    assert confirm.parameters["toLogicalId"] == DEFAULT_LOGICAL_ID
    assert ion.ims_refusals == []
    # Through the gateway with the service account's token.
    assert ion.token_requests_by_grant["password"] >= 1
    assert [c.status for c in ion.gateway_calls] == [201]


async def test_gateway_down_keeps_ims_answering_and_the_confirm_arrives_once_it_is_back(tmp_path: Path) -> None:
    port = free_port()
    factory = BodFactory(8)
    refused, good = factory.sales_order(), factory.sales_order()
    # The `.ionapi` names a gateway that is not there yet.
    ionapi = IonSimulator().write_ionapi(tmp_path / "ion.ionapi", f"http://127.0.0.1:{port}")
    source = _source(ionapi, retry={"schedule": ["200ms"] * 50, "max_age": "1h"})
    config_path = write_config(tmp_path, base_config(tmp_path, sources=[source]))
    with relay_process(config_path, tmp_path) as relay:
        await relay.wait_ready()
        assert await _push(relay.base_url, (refused, _unmappable(refused))) == [400]

        async def retried() -> bool:
            async with aiohttp.ClientSession() as session, session.get(f"{relay.base_url}/metrics") as resp:
                text = await resp.text()
            return 'relay_ion_confirms_total{source="halloran-ion",state="retry"}' in text

        await until(retried, timeout=20)
        # Meanwhile IMS is answered as ever.
        async with aiohttp.ClientSession() as session:
            results = await push_bods(
                f"{relay.base_url}/ion/halloran-ion",
                [make_ims_message(good)],
                session=session,
                auth=(ION_USER, ION_PASSWORD),
            )
        assert [r.status for r in results] == [202]
        async with running_ion_simulator(port=port) as (ion, _):
            await until(lambda: len(ion.confirms) == 1, timeout=20)
            assert ion.confirms[0].original_bod_id == _bod_id(refused.xml)
    log = (tmp_path / "relay.log").read_text()
    assert "ConfirmBOD not sent, will retry" in log
    assert "ConfirmBOD sent" in log


async def test_an_unusable_ionapi_file_is_reported_by_check_config(tmp_path: Path) -> None:
    ionapi = IonSimulator().write_ionapi(tmp_path / "ion.ionapi", "http://127.0.0.1:9", grant="client_credentials")
    config_path = write_config(tmp_path, base_config(tmp_path, sources=[_source(ionapi)]))
    result = await arun_cli("check-config", "-c", str(config_path))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "sources[halloran-ion].confirm.ionapi_file" in output
    assert "Create Service Account" in output

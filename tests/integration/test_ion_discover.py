"""An ion-ims source onboarded from what ION pushed: BODs from the ION simulator into `relay serve`, a customer
element that appears mid-run (one `relay/drift` event), `relay discover` drafting the mapping from the stored
originals and the quarantined BODs, and the suggested custom field mapped into `data.extensions`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from helpers import arun_cli, base_config, relay_process, run_cli, until, write_config
from subscriber import Subscriber, subscriber_config

from relay.sim.ion import BodFactory, GeneratedBod, make_ims_message, push_bods
from relay.spec import builtin_spec_paths, load_specs

ION_USER, ION_PASSWORD = "ion", "ion-gateway-password"
SOURCE = {"name": "halloran-ion", "kind": "ion-ims", "auth": {"type": "basic", "username": ION_USER,
                                                               "password": ION_PASSWORD}}  # fmt: skip
LEAD_TIME_PATH = "SalesOrderHeader/UserArea/LeadTimeDays"


def _with_lead_time(bod: GeneratedBod, days: int) -> bytes:
    """The customer's own element in the order header, as a tailored BOD carries it in a UserArea."""
    return bod.xml.replace(b"</SalesOrderHeader>", f"<UserArea><LeadTimeDays>{days}</LeadTimeDays></UserArea>"
                                                   "</SalesOrderHeader>".encode(), 1)  # fmt: skip


async def _push(base_url: str, messages: list[Any]) -> list[int]:
    async with aiohttp.ClientSession() as session:
        results = await push_bods(f"{base_url}/ion/halloran-ion", messages, session=session,
                                  auth=(ION_USER, ION_PASSWORD))  # fmt: skip
    return [r.status for r in results]


def _drift(dashboard: Subscriber) -> list[dict[str, Any]]:
    found = [r for r in dashboard.delivered if r.headers["relay-channel"] == "relay/drift"]
    assert all(r.verified for r in found)
    return [r.payload["data"] for r in found]


async def test_discover_an_ion_source_from_pushed_bods_and_map_its_custom_element(tmp_path: Path) -> None:
    dashboard, orders = Subscriber(), Subscriber()
    for s in (dashboard, orders):
        await s.start()
    factory = BodFactory(seed=5)
    config = base_config(
        tmp_path,
        sources=[SOURCE],
        subscribers=[subscriber_config("dashboard", dashboard.url, channels=["relay/*"]),
                     subscriber_config("orders", orders.url, channels=["order/*"])],
    )  # fmt: skip
    config_path = write_config(tmp_path, config)
    try:
        with relay_process(config_path, tmp_path) as relay:
            await relay.wait_ready()
            plain = [make_ims_message(factory.sales_order()) for _ in range(5)]
            assert await _push(relay.base_url, plain) == [202] * 5
            tailored = []
            for _ in range(3):
                bod = factory.sales_order()
                tailored.append(make_ims_message(bod, payload=_with_lead_time(bod, 4)))
            assert await _push(relay.base_url, tailored) == [202] * 3
            invoice = factory.invoice()
            broken = invoice.xml.replace(b"<DocumentDateTime>", b"<DocumentDateTime>yesterday", 1)
            assert await _push(relay.base_url, [make_ims_message(invoice, payload=broken, kind="malformed")]) == [400]
            await until(lambda: len(_drift(dashboard)) == 1 and len(orders.delivered) == 8, timeout=20)
            assert [d["added"] for d in _drift(dashboard)] == [[LEAD_TIME_PATH]]
            assert _drift(dashboard)[0]["resource"] == "SalesOrder"

        drafted = await arun_cli("discover", "halloran-ion", "-c", str(config_path))
        assert drafted.returncode == 0, drafted.stderr
        draft = drafted.stdout
        assert '- document: "Sync.SalesOrder"' in draft
        assert '        orderNumber: "SalesOrderHeader/DocumentID/ID"   # default' in draft
        assert f"    #   {LEAD_TIME_PATH}: integer, 38% filled" in draft  # 3 of 8 orders
        suggestion = f'# extensions.leadTimeDays: {{path: "{LEAD_TIME_PATH}", type: integer}}   # custom field'
        assert suggestion in draft
        assert '- document: "Sync.Invoice"' in draft  # from the quarantine only

        only = await arun_cli("discover", "halloran-ion", "-c", str(config_path), "--noun", "Invoice", "--json")
        assert only.returncode == 0, only.stderr
        (invoices,) = json.loads(only.stdout)["resources"]
        assert (invoices["document"], invoices["channel"], invoices["sampled"]) == ("Sync.Invoice", "invoice/synced", 1)
        missing = await arun_cli("discover", "halloran-ion", "-c", str(config_path), "--noun", "ItemBalance")
        assert missing.returncode == 1
        assert "no BOD of ItemBalance stored or quarantined yet" in missing.stderr

        # Uncommenting the suggestion puts the customer's element into the event, validated.
        mapped = {**SOURCE, "mappings": {"Sync.SalesOrder": {"fields": {
            "extensions.leadTimeDays": {"path": LEAD_TIME_PATH, "type": "integer"}}}}}  # fmt: skip
        config_path = write_config(tmp_path, {**config, "sources": [mapped]})
        with relay_process(config_path, tmp_path) as relay:
            await relay.wait_ready()
            bod = factory.sales_order()
            assert await _push(relay.base_url, [make_ims_message(bod, payload=_with_lead_time(bod, 9))]) == [202]
            await until(lambda: len(orders.delivered) == 9, timeout=20)
    finally:
        for s in (dashboard, orders):
            await s.stop()
    last = orders.delivered[-1]
    assert last.verified
    assert last.payload["data"]["extensions"] == {"leadTimeDays": 9}
    assert load_specs(builtin_spec_paths()).validate("order/synced", last.payload) == []
    assert len(_drift(dashboard)) == 1  # the restart and the same shape again: nothing more


def test_discover_of_an_ion_source_without_a_database_creates_none(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, base_config(tmp_path, sources=[SOURCE]))
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli("discover", "halloran-ion", "-c", str(config_path))
    assert result.returncode == 1
    assert "no BODs stored yet" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before

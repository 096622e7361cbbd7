"""SX.e through the ION simulator's gateway: FetchWhere tables, camelCase searches, time zone, failures."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from helpers import arun_cli, base_config, relay_process, until, write_config
from subscriber import Subscriber, subscriber_config

from relay.config import config_from_mapping
from relay.poll.base import PollError
from relay.poll.engine import Poller
from relay.poll.scheduler import build_source
from relay.poll.sxe import build_sxe  # noqa: F401 - registers the builder
from relay.routing import Router
from relay.sim.ion import IonSimulator, running_ion_simulator
from relay.sim.sxe import SxeSimulator
from relay.spec import builtin_spec_paths, load_specs
from relay.store import Store


def _source(ionapi: Path, feeds: list[dict[str, Any]], **over: Any) -> dict[str, Any]:
    return {
        "name": "halloran-sxe",
        "kind": "sxe",
        "ionapi_file": str(ionapi),
        "timezone": "America/Chicago",
        "feeds": feeds,
        **over,
    }


async def _poller(
    store: Store, tmp_path: Path, base_url: str, ion: IonSimulator, session: aiohttp.ClientSession, feed: dict[str, Any]
) -> Poller:
    ionapi = ion.write_ionapi(tmp_path / "halloran.ionapi", base_url)
    config = config_from_mapping({"sources": [_source(ionapi, [feed])]})
    specs = load_specs(builtin_spec_paths())
    built = build_source(config.sources[0], session, specs)
    assert built is not None
    fetcher, (resource,) = built
    return Poller(
        store=store, specs=specs, router=Router([]), source="halloran-sxe", fetcher=fetcher, resource=resource
    )


ICSW = {"feed": "icsw", "channel": "inventory/synced", "every": "1s", "record_limit": 50, "reconcile_every": "1h"}


async def test_fetchwhere_pages_with_restart_row_id(store: Store, tmp_path: Path) -> None:
    sxe = SxeSimulator()
    sxe.seed_rows("icsw", 130)
    async with running_ion_simulator() as (ion, base_url), aiohttp.ClientSession() as session:
        sxe.install(ion)
        poller = await _poller(store, tmp_path, base_url, ion, session, ICSW)
        first = await poller.poll_once()
        assert (first.pages, first.accepted, first.invalid) == (3, 130, 0)
        restarts = [r["RestartRowID"] for r in sxe.requests]
        assert restarts[0] == ""
        assert restarts[1:] == [sxe.tables["icsw"][49]["icswRowID"], sxe.tables["icsw"][99]["icswRowID"]]
        assert {r["BatchSize"] for r in sxe.requests} == {50}
        assert all(r["WhereClause"] == "icsw.cono = 1" for r in sxe.requests)
        event = first.emitted[0]["data"]
        row = sxe.tables["icsw"][0]
        assert event["binLocation"] == row["binloc1"]
        assert event["available"] == row["qtyonhand"] - row["qtycommit"] - row["qtyreservd"]
        # The next poll asks for rows changed since the server-local date of the high-water mark.
        sxe.requests.clear()
        sxe.change("icsw", 5)
        assert (await poller.poll_once()).accepted == 5
        assert sxe.requests[0]["WhereClause"] == "icsw.cono = 1 and icsw.transdt >= DATE(11,20,2026)"
        sxe.delete("icsw", 4)
        deleted = await poller.reconcile()
        assert deleted.accepted == 4
        assert await store.count_events() == 139


async def test_a_server_that_repeats_the_restart_row_is_read_once(store: Store, tmp_path: Path) -> None:
    sxe = SxeSimulator(restart_inclusive=True)
    sxe.seed_rows("icsw", 120)
    async with running_ion_simulator() as (ion, base_url), aiohttp.ClientSession() as session:
        sxe.install(ion)
        poller = await _poller(store, tmp_path, base_url, ion, session, ICSW)
        report = await poller.poll_once()
    assert report.accepted == 120
    assert report.records == 120  # the repeated row was dropped, not counted twice


async def test_a_page_that_does_not_advance_fails_the_poll(store: Store, tmp_path: Path) -> None:
    sxe = SxeSimulator(stall=True)  # answers the first page whatever RestartRowID says
    sxe.seed_rows("icsw", 120)
    async with running_ion_simulator() as (ion, base_url), aiohttp.ClientSession() as session:
        sxe.install(ion)
        poller = await _poller(store, tmp_path, base_url, ion, session, ICSW)
        with pytest.raises(PollError, match="does not advance"):
            await poller.poll_once()
    assert sxe.calls["FetchWhere"] == 2
    assert await store.count_events() == 50  # the first page was committed; the loop stopped at the second


async def test_server_local_time_becomes_utc(store: Store, tmp_path: Path) -> None:
    sxe = SxeSimulator()
    sxe.seed_rows("poeh", 1)
    sxe.tables["poeh"][0].update({"transdt": "2026-11-20", "transtm": "0930"})  # 09:30 in Chicago (CST)
    async with running_ion_simulator() as (ion, base_url), aiohttp.ClientSession() as session:
        sxe.install(ion)
        feed = {"feed": "poeh", "channel": "purchaseorder/synced"}
        poller = await _poller(store, tmp_path, base_url, ion, session, feed)
        (event,) = (await poller.poll_once()).emitted
    assert event["data"]["lastModified"] == "2026-11-20T15:30:00Z"
    assert event["timestamp"] == "2026-11-20T15:30:00Z"
    assert event["data"]["purchaseOrderNumber"] == "300000-00"


async def test_searches_read_camelcase_tables_and_refuse_other_shapes(store: Store, tmp_path: Path) -> None:
    sxe = SxeSimulator()
    sxe.seed_rows("arsc", 5)
    async with running_ion_simulator() as (ion, base_url), aiohttp.ClientSession() as session:
        sxe.install(ion, service_path="SX/web/sxapirestservice")
        ionapi = ion.write_ionapi(tmp_path / "halloran.ionapi", base_url)
        feed = {"feed": "customer-search", "channel": "customer/synced", "record_limit": 10}
        config = config_from_mapping({"sources": [_source(ionapi, [feed], service_path="SX/web/sxapirestservice")]})
        specs = load_specs(builtin_spec_paths())
        built = build_source(config.sources[0], session, specs)
        assert built is not None
        fetcher, (resource,) = built
        poller = Poller(
            store=store, specs=specs, router=Router([]), source="halloran-sxe", fetcher=fetcher, resource=resource
        )
        report = await poller.poll_once()
        assert report.accepted == 5
        assert report.emitted[0]["data"]["customerNumber"] == "10000"
        assert report.emitted[0]["data"]["postalCode"] == "62701"
        assert sxe.calls["sxapiargetcustomerlistv3"] == 1

        sxe.answer_next = {"response": {"cErrorMessage": "", "tcustomer": {"t-customer": []}}}
        with pytest.raises(PollError, match=r"expected the table 'tCustLstV3'.*keys: cErrorMessage, tcustomer"):
            await poller.poll_once()
        sxe.error_next = "Invalid Operator Initials"
        with pytest.raises(PollError, match=r"SX\.e error: Invalid Operator Initials"):
            await poller.poll_once()
        sxe.seed_rows("arsc", 5)  # 10 rows = recordLimit: the search may have been cut short
        with pytest.raises(PollError, match="reached recordLimit 10"):
            await poller.poll_once()
        ion.fail_next(429, retry_after="12")
        with pytest.raises(PollError) as info:
            await poller.poll_once()
        assert info.value.retry_after_s == 12
    assert await store.count_events() == 5


async def test_order_list_asks_for_an_enter_date_window(store: Store, tmp_path: Path) -> None:
    sxe = SxeSimulator()
    sxe.seed_rows("oeeh", 3)
    async with running_ion_simulator() as (ion, base_url), aiohttp.ClientSession() as session:
        sxe.install(ion)
        feed = {"feed": "order-list", "channel": "order/synced", "lookback": "60d"}
        poller = await _poller(store, tmp_path, base_url, ion, session, feed)
        report = await poller.poll_once()
    assert report.accepted == 3
    assert {p["data"]["orderNumber"] for p in report.emitted} == {"500000-00", "500001-00", "500002-00"}
    today = datetime.now(ZoneInfo("America/Chicago")).date()
    request = sxe.requests[0]
    assert request["endEnterDate"] == today.isoformat()
    assert request["startEnterDate"] == (today - timedelta(days=60)).isoformat()


async def test_serve_delivers_sxe_purchase_orders_vendors_and_customers(tmp_path: Path) -> None:
    """End to end: simulator → `relay serve` → subscriber; an unexpected shape shows in the log and in --dry-run."""
    sxe = SxeSimulator()
    sxe.seed_rows("poeh", 4)
    sxe.seed_rows("apsv", 3)
    sxe.seed_rows("arsc", 2)
    sub = Subscriber()
    await sub.start()
    try:
        async with running_ion_simulator() as (ion, base_url):
            sxe.install(ion)
            ionapi = ion.write_ionapi(tmp_path / "halloran.ionapi", base_url)
            feeds = [
                {"feed": "poeh", "channel": "purchaseorder/synced", "every": "300ms", "jitter": 0},
                {"feed": "apsv", "channel": "vendor/synced", "every": "300ms", "jitter": 0},
                {"feed": "customer-search", "channel": "customer/synced", "every": "300ms", "jitter": 0},
            ]
            config = base_config(
                tmp_path,
                delivery={"poll_interval": "200ms"},
                sources=[_source(ionapi, feeds)],
                subscribers=[
                    subscriber_config("buyer", sub.url, channels=["purchaseorder/*", "vendor/*", "customer/*"])
                ],
            )
            config_path = write_config(tmp_path, config)
            with relay_process(config_path, tmp_path) as relay:
                await relay.wait_ready()
                await until(lambda: len(set(sub.delivered_ids())) >= 9, timeout=20)
                by_channel: dict[str, list[dict[str, Any]]] = {}
                for r in sub.delivered:
                    by_channel.setdefault(r.headers["relay-channel"], []).append(r.payload["data"])
                assert sorted(d["purchaseOrderNumber"] for d in by_channel["purchaseorder/synced"]) == [
                    "300000-00",
                    "300001-00",
                    "300002-00",
                    "300003-00",
                ]
                assert {d["vendorNumber"] for d in by_channel["vendor/synced"]} == {"1000", "1001", "1002"}
                assert {d["customerNumber"] for d in by_channel["customer/synced"]} == {"10000", "10001"}
                assert all(d["lastModified"].endswith("Z") for d in by_channel["vendor/synced"])
                # A changed purchase order is delivered again; an unexpected answer is a logged failure.
                changed = sxe.change("poeh", 1)[0]
                await until(lambda: len(set(sub.delivered_ids())) >= 10, timeout=20)
                assert sub.delivered[-1].payload["data"]["status"] == str(changed["stagecd"])
                sxe.answer_next = {"ttblpoel": []}
                await until(lambda: "ttblpoeh" in relay.log_text(), timeout=20)
                log = relay.log_text()
                assert "poll failed" in log
                assert "expected a 'ttblpoeh' list; the answer had keys: ttblpoel" in log

            sxe.answer_next = {"response": {"cErrorMessage": ""}}
            dry = await arun_cli("poll", "halloran-sxe", "--dry-run", "-c", str(config_path), "--json")
            assert dry.returncode == 1
            assert "poll failed" in dry.stderr
            assert "had keys: response" in dry.stderr
    finally:
        await sub.stop()
    assert json.loads(json.dumps(sub.delivered[0].payload))["documentType"] == "SyncPurchaseOrder"


async def test_receipts_are_the_received_purchase_orders(store: Store, tmp_path: Path) -> None:
    sxe = SxeSimulator()
    sxe.seed_rows("poeh", 6)  # 300002 and 300005 are received; the others are printed (stage 2)
    async with running_ion_simulator() as (ion, base_url), aiohttp.ClientSession() as session:
        sxe.install(ion)
        feed = {"feed": "receipts", "channel": "receipt/synced", "reconcile_every": "1h"}
        poller = await _poller(store, tmp_path, base_url, ion, session, feed)
        first = await poller.poll_once()
        assert sorted(e["data"]["receiptNumber"] for e in first.emitted) == ["300002-00", "300005-00"]
        assert sxe.requests[0]["TableName"] == "poeh"
        assert sxe.requests[0]["WhereClause"] == "poeh.cono = 1 and (poeh.stagecd >= 5 and poeh.stagecd <= 7)"
        assert {e["documentType"] for e in first.emitted} == {"SyncReceipt"}

        # Received today at 08:07 in Chicago (CST): the receipt carries the server's date and the UTC instant.
        sxe.now = datetime(2026, 11, 21, 14, 6, tzinfo=ZoneInfo("UTC"))
        received = sxe.receive(300000)
        assert (received["transdt"], received["transtm"]) == ("2026-11-21", "0807")
        (event,) = (await poller.poll_once()).emitted
        assert event["data"] == {
            "receiptNumber": "300000-00",
            "purchaseOrderNumber": "300000-00",
            "vendorNumber": str(received["vendno"]),
            "warehouse": received["whse"],
            "receiptDate": "2026-11-21",
            "lastModified": "2026-11-21T14:07:00Z",
        }
        assert event["timestamp"] == "2026-11-21T14:07:00Z"
        assert sxe.requests[-1]["WhereClause"].endswith("and (poeh.stagecd >= 5 and poeh.stagecd <= 7)")

        # A cancelled receipt (stage 9) leaves the listing: the reconcile says it is gone.
        sxe.tables["poeh"][5]["stagecd"] = 9
        gone = await poller.reconcile()
        assert gone.accepted == 1
        assert gone.emitted[0]["data"]["receiptNumber"] == "300005-00"
    assert await store.count_events() == 4


async def test_a_receipts_where_replaces_the_stages(store: Store, tmp_path: Path) -> None:
    sxe = SxeSimulator()
    sxe.seed_rows("poeh", 6)
    sxe.tables["poeh"][0]["stagecd"] = 6  # costed: a receipt under the default stages, not under this filter
    async with running_ion_simulator() as (ion, base_url), aiohttp.ClientSession() as session:
        sxe.install(ion)
        feed = {"feed": "receipts", "channel": "receipt/synced", "where": "poeh.stagecd = 5 and poeh.pono > 300002"}
        poller = await _poller(store, tmp_path, base_url, ion, session, feed)
        report = await poller.poll_once()
    assert sxe.requests[0]["WhereClause"] == "poeh.cono = 1 and (poeh.stagecd = 5 and poeh.pono > 300002)"
    assert [e["data"]["receiptNumber"] for e in report.emitted] == ["300005-00"]


async def test_serve_delivers_sxe_receipts(tmp_path: Path) -> None:
    """End to end: a purchase order received in SX.e reaches a subscriber as a signed `receipt/synced`."""
    sxe = SxeSimulator()
    sxe.seed_rows("poeh", 3)  # 300002 is received
    sub = Subscriber()
    await sub.start()
    try:
        async with running_ion_simulator() as (ion, base_url):
            sxe.install(ion)
            ionapi = ion.write_ionapi(tmp_path / "halloran.ionapi", base_url)
            feeds = [{"feed": "receipts", "channel": "receipt/synced", "every": "300ms", "jitter": 0}]
            config = base_config(
                tmp_path,
                delivery={"poll_interval": "200ms"},
                sources=[_source(ionapi, feeds)],
                subscribers=[subscriber_config("receiving", sub.url, channels=["receipt/*"])],
            )
            with relay_process(write_config(tmp_path, config), tmp_path) as relay:
                await relay.wait_ready()
                await until(lambda: len(sub.delivered) >= 1, timeout=20)
                received = sxe.receive(300001)
                await until(lambda: len(sub.delivered) >= 2, timeout=20)
    finally:
        await sub.stop()
    assert all(r.verified for r in sub.requests)
    assert [r.headers["relay-channel"] for r in sub.delivered] == ["receipt/synced", "receipt/synced"]
    first, second = (r.payload for r in sub.delivered)
    assert first["documentType"] == "SyncReceipt"
    assert first["data"]["receiptNumber"] == "300002-00"
    assert second["data"]["receiptNumber"] == second["data"]["purchaseOrderNumber"] == "300001-00"
    assert second["data"]["vendorNumber"] == str(received["vendno"])
    assert second["data"]["receiptDate"] == received["receiptdt"]
    assert second["data"]["lastModified"].endswith("Z")
    assert len(sub.delivered) == 2  # the unchanged receipt was not sent again

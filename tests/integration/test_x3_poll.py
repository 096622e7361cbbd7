"""Sage X3 polling against the simulator (built from Sage's documented shapes, see tests/fixtures/x3/).

REST paging, changes, deletions, errors and token refresh; a server that caps `count`; ITMMVT stock; the
`$query` facet check of `check-config --probe`; GraphQL by API node with a connected-application JWT; purchase
orders, receipts and suppliers delivered to a subscriber.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import start_stack, stop_stack
from helpers import arun_cli, base_config, until, write_config
from subscriber import Subscriber, subscriber_config

from relay.config import config_from_mapping
from relay.poll.base import PollError
from relay.poll.engine import Poller
from relay.poll.scheduler import build_source
from relay.poll.x3 import X3Fetcher
from relay.routing import Router
from relay.sim.x3 import X3Simulator, running_x3_simulator
from relay.spec import builtin_spec_paths, load_specs
from relay.store import Store

BASIC = {"type": "basic", "username": "admin", "password": "aldgate"}


@pytest.fixture
async def x3() -> AsyncIterator[tuple[X3Simulator, str]]:
    async with running_x3_simulator(seed_data=False) as (sim, base_url):
        yield sim, base_url


def _source(base_url: str, resources: list[dict[str, Any]], **source: Any) -> dict[str, Any]:
    return {"name": "aldgate-x3", "kind": "x3", "base_url": base_url, "folder": "ALDGATE", "auth": BASIC,
            "resources": resources, **source}  # fmt: skip


def _built(base_url: str, session: aiohttp.ClientSession, resource: dict[str, Any], **source: Any) -> Any:
    config = config_from_mapping({"sources": [_source(base_url, [resource], **source)]})
    specs = load_specs(builtin_spec_paths())
    built = build_source(config.sources[0], session, specs)
    assert built is not None
    fetcher, (spec,) = built
    return fetcher, spec, specs


def _poller(
    store: Store,
    base_url: str,
    session: aiohttp.ClientSession,
    cls: str = "BPCUSTOMER",
    channel: str = "customer/synced",
    page_size: int = 100,
    **source: Any,
) -> Poller:
    resource = {"class": cls, "channel": channel, "page_size": page_size, "reconcile_every": "1h"}
    fetcher, spec, specs = _built(base_url, session, resource, **source)
    return Poller(store=store, specs=specs, router=Router([]), source="aldgate-x3", fetcher=fetcher, resource=spec)


async def test_load_changes_deletions(store: Store, x3: tuple[X3Simulator, str]) -> None:
    sim, base_url = x3
    sim.seed_records("BPCUSTOMER", 2000)
    async with aiohttp.ClientSession() as session:
        poller = _poller(store, base_url, session)
        first = await poller.poll_once()
        assert (first.pages, first.accepted, first.invalid) == (20, 2000, 0)
        assert (await poller.poll_once()).accepted == 0
        sim.change("BPCUSTOMER", 500)
        assert (await poller.poll_once()).accepted == 500
        sim.delete("BPCUSTOMER", 50)
        deleted = await poller.reconcile()
        assert deleted.accepted == 50
        assert {p["documentType"] for p in deleted.emitted} == {"DeleteCustomerPartyMaster"}
        assert await store.count_events() == 2550


async def test_a_server_that_caps_count_does_not_end_the_poll_early(store: Store, x3: tuple[X3Simulator, str]) -> None:
    sim, base_url = x3
    sim.seed_records("BPCUSTOMER", 250)
    sim.max_count = 20  # the relay asks for 100 a page; the server serves 20
    async with aiohttp.ClientSession() as session:
        poller = _poller(store, base_url, session)
        assert (await poller.poll_once()).accepted == 250  # followed $links.$next
        sim.links = False  # and without $links: key paging until a page comes back empty
        sim.change("BPCUSTOMER", 60)
        report = await poller.poll_once()
        assert report.accepted == 60
        sim.delete("BPCUSTOMER", 5)
        assert (await poller.reconcile()).accepted == 5  # a complete listing, not the first 20 keys
    assert await store.count_events() == 315


async def test_errors_retry_after_and_listing_failure(store: Store, x3: tuple[X3Simulator, str]) -> None:
    sim, base_url = x3
    sim.seed_records("BPCUSTOMER", 500)
    async with aiohttp.ClientSession() as session:
        poller = _poller(store, base_url, session)
        sim.fail_next(429, retry_after="30")
        with pytest.raises(PollError) as info:
            await poller.poll_once()
        assert info.value.retry_after_s == 30
        assert (await poller.poll_once()).accepted == 500
        sim.delete("BPCUSTOMER", 5)
        sim.fail_next(500, after_pages=2)  # a 500 in the middle of the key listing
        with pytest.raises(PollError, match="500"):
            await poller.reconcile()
        assert await store.count_events() == 500  # a listing that fails emits nothing
        assert (await poller.reconcile()).accepted == 5


async def test_itmmvt_stock_per_site_becomes_inventory_events(store: Store, x3: tuple[X3Simulator, str]) -> None:
    sim, base_url = x3
    sim.seed_records("ITMMVT", 1200)
    async with aiohttp.ClientSession() as session:
        poller = _poller(store, base_url, session, cls="ITMMVT", channel="inventory/synced")
        sim.fail_next(503, after_pages=4)
        with pytest.raises(PollError):
            await poller.poll_once()
        assert await store.count_events() == 400
        report = await poller.poll_once()
        assert report.pages == 8
        sim.change("ITMMVT", 3)
        changed = await poller.poll_once()
    assert await store.count_events() == 1203
    record = sim.records["ITMMVT"][sim.key("ITMMVT", next(iter(sim.records["ITMMVT"].values())))]
    assert {"ITMREF", "STOFCY", "PHYSTO", "ALLSTO"} <= set(record)
    data = changed.emitted[0]["data"]
    assert set(data) >= {"partNumber", "warehouse", "onHand", "allocated"}
    assert data["warehouse"] in ("ALD01", "ALD02")


async def test_probe_names_fields_outside_the_query_facet(store: Store, x3: tuple[X3Simulator, str]) -> None:
    sim, base_url = x3
    sim.seed_records("BPCUSTOMER", 5)
    sim.set_query_facet("BPCUSTOMER", {"BPCNUM", "BPCNAM", "CUR", "CRY"})  # no UPDDATTIM in this facet
    resource = {"class": "BPCUSTOMER", "channel": "customer/synced", "representation": "ZBPC"}
    async with aiohttp.ClientSession() as session:
        fetcher, spec, _ = _built(base_url, session, resource)
        assert isinstance(fetcher, X3Fetcher)
        (problem,) = await fetcher.probe(spec)
        assert "UPDDATTIM not in the $query facet of representation ZBPC (class BPCUSTOMER)" in problem
        assert "custom representation" in problem
        # The daemon's incremental poll says what the 500 means instead of a bare status.
        with pytest.raises(PollError, match=r"HTTP 500.*outside the \$query facet of representation ZBPC"):
            await fetcher.changes(spec, since="2026-11-20T07:00:00Z", cursor=None)
        sim.set_query_facet("BPCUSTOMER", {"BPCNUM", "BPCNAM", "CUR", "CRY", "UPDDATTIM"})
        assert await fetcher.probe(spec) == []


async def test_check_config_probe_names_the_missing_field(tmp_path: Path, x3: tuple[X3Simulator, str]) -> None:
    sim, base_url = x3
    sim.seed_records("ITMMVT", 4)
    sim.set_query_facet("ITMMVT", {"ITMREF", "STOFCY", "PHYSTO", "ALLSTO"})
    resources = [{"class": "ITMMVT", "channel": "inventory/synced"}]
    path = write_config(tmp_path, base_config(tmp_path, sources=[_source(base_url, resources)]))
    result = await arun_cli("check-config", "--probe", "-c", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "aldgate-x3 ITMMVT: UPDDATTIM not in the $query facet of representation ITMMVT (class ITMMVT)" in (
        result.stdout
    )
    sim.set_query_facet("ITMMVT", {"ITMREF", "STOFCY", "PHYSTO", "ALLSTO", "UPDDATTIM"})
    result = await arun_cli("check-config", "--probe", "-c", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "aldgate-x3 ITMMVT: ok (4 records in the first page)" in result.stdout


async def test_oauth_token_expiry(store: Store, x3: tuple[X3Simulator, str]) -> None:
    sim, base_url = x3
    sim.seed_records("BPCUSTOMER", 250)
    oauth = {"type": "oauth2-client-credentials", "token_url": f"{base_url}/auth/token", "client_id": "admin",
             "client_secret": "aldgate"}  # fmt: skip
    async with aiohttp.ClientSession() as session:
        poller = _poller(store, base_url, session, auth=oauth)
        assert (await poller.poll_once()).accepted == 250
        sim._tokens.clear()  # every token expires: the next request gets 401, refreshes once, continues
        sim.change("BPCUSTOMER", 10)
        assert (await poller.poll_once()).accepted == 10


def _connected_app(base_url: str, **over: Any) -> dict[str, Any]:
    return {"type": "connected-app", "client_id": "relay-app", "client_secret": "s3cret", "user": "relay", **over}


async def test_graphql_by_api_node_with_connected_app(store: Store, x3: tuple[X3Simulator, str]) -> None:
    sim, base_url = x3
    sim.add_connected_app("relay-app", "s3cret", "relay", f"{base_url}/xtrem/api")
    sim.seed_records("BPCUSTOMER", 250)
    async with aiohttp.ClientSession() as session:
        poller = _poller(store, base_url, session, api="graphql", auth=_connected_app(base_url))
        first = await poller.poll_once()
        assert (first.pages, first.accepted, first.invalid) == (3, 250, 0)
        assert first.emitted[0]["data"]["customerNumber"] == "C00000"
        assert first.emitted[0]["data"]["customerName"].endswith("Foods 0")
        sim.change("BPCUSTOMER", 10)
        assert (await poller.poll_once()).accepted == 10  # filter {_updateStamp: {_gte: …}}
        sim.delete("BPCUSTOMER", 4)
        assert (await poller.reconcile()).accepted == 4

        wrong = _poller(store, base_url, session, api="graphql", auth=_connected_app(base_url, audience="xtrem"))
        with pytest.raises(PollError, match=r"401.*aud does not match") as info:
            await wrong.poll_once()
        assert info.value.permission


async def test_graphql_unknown_property_is_an_error_not_an_empty_page(
    store: Store, x3: tuple[X3Simulator, str]
) -> None:
    sim, base_url = x3
    sim.add_connected_app("relay-app", "s3cret", "relay", f"{base_url}/xtrem/api")
    sim.seed_records("BPSUPPLIER", 3)
    resource = {"class": "BPSUPPLIER", "channel": "vendor/synced", "mapping": {"fields": {"phone": "telephone"}}}
    async with aiohttp.ClientSession() as session:
        fetcher, spec, _ = _built(base_url, session, resource, api="graphql", auth=_connected_app(base_url))
        with pytest.raises(PollError, match=r'GraphQL error on x3MasterData\.supplier: Cannot query field "telephone"'):
            await fetcher.changes(spec, since=None, cursor=None)


@pytest.mark.parametrize("api", ["rest", "graphql"])
async def test_purchase_orders_receipts_and_suppliers_reach_a_subscriber(
    tmp_path: Path, x3: tuple[X3Simulator, str], api: str
) -> None:
    sim, base_url = x3
    sim.add_connected_app("relay-app", "s3cret", "relay", f"{base_url}/xtrem/api")
    sim.seed_records("PORDER", 7)
    sim.seed_records("PRECEIPT", 5)
    sim.seed_records("BPSUPPLIER", 4)
    receiver = Subscriber()
    url = await receiver.start()
    channels = {"PORDER": "purchaseorder/synced", "PRECEIPT": "receipt/synced", "BPSUPPLIER": "vendor/synced"}
    auth = _connected_app(base_url) if api == "graphql" else BASIC
    stack = await start_stack(
        tmp_path,
        base_config(tmp_path, subscribers=[subscriber_config("buyer", url, channels=list(channels.values()))]),
    )
    try:
        async with aiohttp.ClientSession() as session:
            for cls, channel in channels.items():
                fetcher, spec, specs = _built(base_url, session, {"class": cls, "channel": channel}, api=api, auth=auth)
                poller = Poller(store=stack.store, specs=specs, router=stack.runtime.ingestor.router,
                                source="aldgate-x3", fetcher=fetcher, resource=spec)  # fmt: skip
                report = await poller.poll_once()
                assert (report.accepted, report.invalid) == (len(sim.records[cls]), 0)
        await until(lambda: len(receiver.delivered) == 16)
    finally:
        await stop_stack(stack)
        await receiver.stop()
    by_channel: dict[str, list[dict[str, Any]]] = {}
    for item in receiver.delivered:
        by_channel.setdefault(item.headers["relay-channel"], []).append(item.payload["data"])
    assert {c: len(v) for c, v in by_channel.items()} == {"purchaseorder/synced": 7, "receipt/synced": 5,
                                                         "vendor/synced": 4}  # fmt: skip
    po = next(d for d in by_channel["purchaseorder/synced"] if d["purchaseOrderNumber"] == "PO000003")
    assert po["vendorNumber"] == "S0003"
    receipt = next(d for d in by_channel["receipt/synced"] if d["receiptNumber"] == "RC000001")
    assert (receipt["vendorNumber"], receipt["warehouse"]) == ("S0001", "ALD02")
    vendor = next(d for d in by_channel["vendor/synced"] if d["vendorNumber"] == "S0002")
    assert "Board Mills 2" in vendor["vendorName"]

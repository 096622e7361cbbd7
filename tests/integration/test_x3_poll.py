"""Sage X3 polling against the simulator: paging, changes, deletions, errors, token refresh, GraphQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from relay.config import config_from_mapping
from relay.ingest.pipeline import Router
from relay.poll.base import PollError
from relay.poll.engine import Poller
from relay.poll.scheduler import build_source
from relay.poll.x3 import build_x3  # noqa: F401 - registers the builder
from relay.sim.x3 import X3Simulator, running_x3_simulator
from relay.spec import builtin_spec_paths, load_specs
from relay.store import Store


@pytest.fixture
async def x3() -> AsyncIterator[tuple[X3Simulator, str]]:
    async with running_x3_simulator(seed_data=False) as (sim, base_url):
        yield sim, base_url


def _poller(
    store: Store,
    base_url: str,
    session: aiohttp.ClientSession,
    cls: str = "BPCUSTOMER",
    channel: str = "customer/synced",
    **source: Any,
) -> Poller:
    cfg = {
        "name": "aldgate-x3",
        "kind": "x3",
        "base_url": base_url,
        "folder": "ALDGATE",
        "auth": {"type": "basic", "username": "admin", "password": "aldgate"},
        "resources": [{"class": cls, "channel": channel, "page_size": 100, "reconcile_every": "1h"}],
        **source,
    }
    config = config_from_mapping({"sources": [cfg]})
    specs = load_specs(builtin_spec_paths())
    built = build_source(config.sources[0], session, specs)
    assert built is not None
    fetcher, (resource,) = built
    return Poller(store=store, specs=specs, router=Router([]), source="aldgate-x3", fetcher=fetcher, resource=resource)


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


async def test_a_crash_mid_poll_resumes_without_loss_or_duplicates(store: Store, x3: tuple[X3Simulator, str]) -> None:
    sim, base_url = x3
    sim.seed_records("ITMMASTER", 1200)
    async with aiohttp.ClientSession() as session:
        poller = _poller(store, base_url, session, cls="ITMMASTER", channel="inventory/synced")
        sim.fail_next(503, after_pages=4)
        with pytest.raises(PollError):
            await poller.poll_once()
        assert await store.count_events() == 400
        report = await poller.poll_once()
        assert report.pages == 8
    assert await store.count_events() == 1200


async def test_oauth_token_expiry_and_graphql(store: Store, x3: tuple[X3Simulator, str]) -> None:
    sim, base_url = x3
    sim.seed_records("BPCUSTOMER", 250)
    oauth = {
        "type": "oauth2-client-credentials",
        "token_url": f"{base_url}/auth/token",
        "client_id": "admin",
        "client_secret": "aldgate",
    }
    async with aiohttp.ClientSession() as session:
        poller = _poller(store, base_url, session, auth=oauth, api="graphql")
        first = await poller.poll_once()
        assert (first.pages, first.accepted) == (3, 250)
        sim._tokens.clear()  # every token expires: the next request gets 401, refreshes once, continues
        sim.change("BPCUSTOMER", 10)
        assert (await poller.poll_once()).accepted == 10

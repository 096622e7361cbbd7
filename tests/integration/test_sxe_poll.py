"""SX.e change feeds through the ION simulator's gateway, with the .ionapi token manager."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.config import config_from_mapping
from relay.ingest.pipeline import Router
from relay.poll.base import PollError
from relay.poll.engine import Poller
from relay.poll.scheduler import build_source
from relay.poll.sxe import build_sxe  # noqa: F401 - registers the builder
from relay.sim.ion import running_ion_simulator
from relay.sim.sxe import SxeSimulator
from relay.spec import builtin_spec_paths, load_specs
from relay.store import Store

OP = "sxapiicecatalogitembalancev2"


async def _poller(store: Store, tmp_path: Path, base_url: str, ion: Any, session: aiohttp.ClientSession) -> Poller:
    ionapi = ion.write_ionapi(tmp_path / "halloran.ionapi", base_url)
    config = config_from_mapping(
        {
            "sources": [
                {
                    "name": "halloran-sxe",
                    "kind": "sxe",
                    "ionapi_file": str(ionapi),
                    "feeds": [
                        {
                            "feed": "itembalance",
                            "channel": "inventory/synced",
                            "every": "1s",
                            "record_limit": 50,
                            "reconcile_every": "1h",
                        }
                    ],
                }
            ]
        }
    )
    specs = load_specs(builtin_spec_paths())
    built = build_source(config.sources[0], session, specs)
    assert built is not None
    fetcher, (resource,) = built
    return Poller(
        store=store, specs=specs, router=Router([]), source="halloran-sxe", fetcher=fetcher, resource=resource
    )


async def test_item_balance_feed(store: Store, tmp_path: Path) -> None:
    sxe = SxeSimulator()
    sxe.seed_rows(OP, 300)
    async with running_ion_simulator() as (ion, base_url), aiohttp.ClientSession() as session:
        ion.add_gateway_route("SX/rest/sxapirestservice/{operation}", sxe.handle)
        poller = await _poller(store, tmp_path, base_url, ion, session)
        first = await poller.poll_once()
        assert (first.pages, first.accepted, first.invalid) == (6, 300, 0)
        assert {p["data"]["warehouse"] for p in first.emitted} == {"MAIN", "EAST", "WEST"}
        assert ion.token_requests == 1
        assert (await poller.poll_once()).accepted == 0
        sxe.change(OP, 40)
        ion.expire_tokens()  # the token expires between polls: one 401, one refresh, then on
        changed = await poller.poll_once()
        assert changed.accepted == 40
        assert ion.token_requests == 2
        sxe.delete(OP, 10)
        deleted = await poller.reconcile()
        assert (deleted.accepted, {p["documentType"] for p in deleted.emitted}) == (10, {"DeleteInventory"})
        assert await store.count_events() == 350

        sxe.error_next = "Invalid Operator Initials"
        with pytest.raises(PollError, match="Invalid Operator Initials"):
            await poller.poll_once()
        ion.fail_next(429, retry_after="12")
        with pytest.raises(PollError) as info:
            await poller.poll_once()
        assert info.value.retry_after_s == 12
        ion.fail_next(504)
        with pytest.raises(PollError, match="504"):
            await poller.reconcile()
        assert await store.count_events() == 350


async def test_token_expiry_in_the_middle_of_a_poll(store: Store, tmp_path: Path) -> None:
    sxe = SxeSimulator()
    sxe.seed_rows(OP, 200)
    async with running_ion_simulator() as (ion, base_url), aiohttp.ClientSession() as session:
        ion.add_gateway_route("SX/rest/sxapirestservice/{operation}", sxe.handle)
        sxe.on_call = lambda op: ion.expire_tokens() if sxe.calls[op] == 2 else None
        poller = await _poller(store, tmp_path, base_url, ion, session)
        report = await poller.poll_once()
    assert report.accepted == 200
    assert ion.gateway_unauthorized == 1

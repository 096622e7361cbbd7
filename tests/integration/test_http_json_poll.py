"""`kind: http-json` polling against a real JSON API on 127.0.0.1, into a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from relay._net import bound_port
from relay.config import config_from_mapping
from relay.poll.base import PollError
from relay.poll.engine import Poller
from relay.poll.scheduler import build_source
from relay.routing import Router
from relay.spec import builtin_spec_paths, load_specs
from relay.store import Store


class Catalogue:
    """Items with stock per warehouse; `?since=` filters on `updated`, `?after=` pages by id."""

    def __init__(self, n: int) -> None:
        self.items = {
            f"{i:05d}": {"sku": f"BOX-{i}", "wh": "MAIN", "qty": i, "updated": f"2026-11-20T10:{i % 60:02d}:00Z"}
            for i in range(n)
        }
        self.fail_status: int | None = None
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.fail_status:
            status, self.fail_status = self.fail_status, None
            return web.json_response({"error": "nope"}, status=status, headers={"Retry-After": "7"})
        since = request.query.get("since")
        after = request.query.get("after", "")
        rows = sorted((k, v) for k, v in self.items.items() if k > after and (not since or v["updated"] >= since))
        page = rows[:100]
        body: dict[str, Any] = {"result": {"items": [{"id": k, **v} for k, v in page]}}
        if len(rows) > 100:
            body["next"] = page[-1][0]
        return web.json_response(body)


@pytest.fixture
async def api() -> AsyncIterator[tuple[Catalogue, str]]:
    catalogue = Catalogue(1050)
    app = web.Application()
    app.router.add_get("/stock", catalogue.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield catalogue, f"http://127.0.0.1:{bound_port(site)}"
    await runner.cleanup()


def _poller(store: Store, base_url: str, session: Any) -> Poller:
    config = config_from_mapping(
        {
            "sources": [
                {
                    "name": "wms",
                    "kind": "http-json",
                    "resources": [
                        {
                            "url": f"{base_url}/stock",
                            "channel": "inventory/synced",
                            "records_path": "result.items",
                            "key": "id",
                            "updated_param": "since",
                            "cursor_param": "after",
                            "cursor_path": "next",
                            "every": "1s",
                            "reconcile_every": "1h",
                            "mapping": {
                                "fields": {
                                    "partNumber": "sku",
                                    "warehouse": "wh",
                                    "onHand": {"path": "qty", "type": "number"},
                                    "lastTransactionDate": {"path": "updated", "type": "date-time"},
                                },
                                "updated_path": "updated",
                            },
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
    return Poller(store=store, specs=specs, router=Router([]), source="wms", fetcher=fetcher, resource=resource)


async def test_initial_load_changes_deletions_and_errors(store: Store, api: tuple[Catalogue, str]) -> None:
    import aiohttp

    catalogue, base_url = api
    async with aiohttp.ClientSession() as session:
        poller = _poller(store, base_url, session)
        first = await poller.poll_once()
        assert (first.pages, first.accepted, first.invalid) == (11, 1050, 0)
        assert (await poller.poll_once()).accepted == 0  # nothing changed: nothing emitted
        for key in list(catalogue.items)[:30]:
            catalogue.items[key] = {**catalogue.items[key], "qty": -1, "updated": "2026-11-21T00:00:00Z"}
        changed = await poller.poll_once()
        assert changed.accepted == 30
        for key in list(catalogue.items)[100:105]:
            del catalogue.items[key]
        deleted = await poller.reconcile()
        assert deleted.accepted == 5
        assert all(p["documentType"] == "DeleteInventory" for p in deleted.emitted)
        assert await store.count_events() == 1050 + 30 + 5
        catalogue.fail_status = 429
        with pytest.raises(PollError) as info:
            await poller.poll_once()
        assert info.value.retry_after_s == 7
        catalogue.fail_status = 403
        with pytest.raises(PollError) as info:
            await poller.poll_once()
        assert info.value.permission


async def test_dry_run_stores_nothing(store: Store, api: tuple[Catalogue, str]) -> None:
    import aiohttp

    _, base_url = api
    async with aiohttp.ClientSession() as session:
        report = await _poller(store, base_url, session).poll_once(dry_run=True, limit=25)
    assert len(report.emitted) == 25
    assert await store.count_events() == 0
    assert await store.get_checkpoint("wms", "0:" + base_url + "/stock") is None


async def test_a_crash_between_pages_repeats_at_most_one_page(store: Store, api: tuple[Catalogue, str]) -> None:
    import aiohttp

    _, base_url = api
    async with aiohttp.ClientSession() as session:
        poller = _poller(store, base_url, session)
        real = poller.fetcher
        calls = {"n": 0}

        class Crashing:
            async def changes(self, resource: Any, *, since: Any, cursor: Any) -> Any:
                calls["n"] += 1
                if calls["n"] == 4:
                    raise PollError("connection reset")
                return await real.changes(resource, since=since, cursor=cursor)

            async def listing(self, resource: Any, *, cursor: Any) -> Any:
                return await real.listing(resource, cursor=cursor)

            async def close(self) -> None:
                return None

        poller.fetcher = Crashing()
        with pytest.raises(PollError):
            await poller.poll_once()
        assert await store.count_events() == 300
        report = await poller.poll_once()
    assert report.pages == 8  # resumed from the checkpoint, not from the start
    assert await store.count_events() == 1050


def _cli_config(tmp_path: Path, base_url: str) -> Path:
    import yaml
    from helpers import base_config

    resource = {
        "url": f"{base_url}/stock",
        "channel": "inventory/synced",
        "records_path": "result.items",
        "key": "id",
        "updated_param": "since",
        "cursor_param": "after",
        "cursor_path": "next",
        "every": "1s",
        "mapping": {"fields": {"partNumber": "sku", "warehouse": "wh"}, "updated_path": "updated"},
    }
    data = base_config(tmp_path, sources=[{"name": "wms", "kind": "http-json", "resources": [resource]}])
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def test_cli_poll_dry_run_and_probe(tmp_path: Path, api: tuple[Catalogue, str]) -> None:
    import json

    from helpers import arun_cli

    catalogue, base_url = api
    config_path = _cli_config(tmp_path, base_url)
    dry = await arun_cli("poll", "wms", "--dry-run", "--limit", "7", "--json", "-c", str(config_path))
    assert dry.returncode == 0, dry.stderr
    emitted = json.loads(dry.stdout)
    assert len(emitted) == 7
    assert all(e["channel"] == "inventory/synced" for e in emitted)
    listed = await arun_cli("events", "list", "-c", str(config_path), "--json")
    assert json.loads(listed.stdout) == []  # the dry run stored nothing
    probe = await arun_cli("check-config", "--probe", "-c", str(config_path))
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert "wms 0:" in probe.stdout
    assert "ok (100 records in the first page)" in probe.stdout
    catalogue.fail_status = 403
    denied = await arun_cli("check-config", "--probe", "-c", str(config_path))
    assert denied.returncode == 1
    assert "permission denied" in denied.stdout

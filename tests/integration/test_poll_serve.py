"""Polling inside `relay serve`: 2,000 records, changes and deletions; SIGKILL in the middle of a poll."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from helpers import arun_cli, base_config, relay_process, until, write_config
from subscriber import Subscriber, subscriber_config

from relay._net import bound_port


class SlowCatalogue:
    """A JSON API of stock records; each page takes a little while so a poll can be interrupted."""

    def __init__(self, n: int) -> None:
        self.items = {f"{i:05d}": self._item(i, "2026-11-20T10:00:00Z") for i in range(n)}
        self.requests = 0
        self.cursors: list[str] = []

    @staticmethod
    def _item(i: int, updated: str, qty: int | None = None) -> dict[str, Any]:
        return {"sku": f"BOX-{i}", "wh": "MAIN", "qty": i if qty is None else qty, "updated": updated}

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        await asyncio.sleep(0.03)
        since = request.query.get("since")
        after = request.query.get("after", "")
        self.cursors.append(after)
        rows = sorted((k, v) for k, v in self.items.items() if k > after and (not since or v["updated"] >= since))
        page = rows[:100]
        body: dict[str, Any] = {"items": [{"id": k, **v} for k, v in page]}
        if len(rows) > 100:
            body["next"] = page[-1][0]
        return web.json_response(body)


@pytest.fixture
async def catalogue() -> AsyncIterator[tuple[SlowCatalogue, str]]:
    api = SlowCatalogue(2000)
    app = web.Application()
    app.router.add_get("/stock", api.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield api, f"http://127.0.0.1:{bound_port(site)}/stock"
    await runner.cleanup()


def _config(tmp_path: Path, url: str, sub_url: str) -> dict[str, Any]:
    return base_config(
        tmp_path,
        delivery={"lease": "1s", "poll_interval": "200ms"},
        sources=[
            {
                "name": "wms",
                "kind": "http-json",
                "resources": [
                    {
                        "url": url,
                        "channel": "inventory/synced",
                        "records_path": "items",
                        "key": "id",
                        "updated_param": "since",
                        "cursor_param": "after",
                        "cursor_path": "next",
                        "every": "300ms",
                        "jitter": 0,
                        "reconcile_every": "1s",
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
        ],
        subscribers=[subscriber_config("wh", sub_url, channels=["inventory/*"], timeout="1s")],
    )


async def _events(config_path: Path) -> list[dict[str, Any]]:
    listed = await arun_cli("events", "list", "-c", str(config_path), "--json", "--limit", "100000")
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout))


async def test_poll_survives_sigkill_and_detects_changes_and_deletions(
    tmp_path: Path, catalogue: tuple[SlowCatalogue, str]
) -> None:
    api, url = catalogue
    sub = Subscriber()
    await sub.start()
    config_path = write_config(tmp_path, _config(tmp_path, url, sub.url))
    try:
        with relay_process(config_path, tmp_path) as relay:
            await relay.wait_ready()
            await until(lambda: api.requests >= 6, timeout=20)  # in the middle of the first poll (20 pages)
            relay.kill()
        first_requests = api.requests
        with relay_process(config_path, tmp_path) as relay:
            await relay.wait_ready()
            await until(lambda: len(set(sub.delivered_ids())) >= 2000, timeout=60)
            # The restart resumed from the checkpoint (a page cursor) instead of starting over.
            assert api.cursors[first_requests] != ""
            for i in range(0, 1000, 2):  # 500 changes
                api.items[f"{i:05d}"] = SlowCatalogue._item(i, "2026-11-21T08:00:00Z", qty=-i)
            for i in range(1000, 1050):  # 50 deletions
                del api.items[f"{i:05d}"]
            await until(lambda: len(set(sub.delivered_ids())) >= 2550, timeout=60)
            await asyncio.sleep(1.0)  # a few more polls and a reconcile: nothing else may be emitted
        events = await _events(config_path)
        channels = [e["channel"] for e in events]
        assert len(events) == 2550
        assert channels.count("inventory/synced") == 2500
        assert channels.count("inventory/deleted") == 50
        assert len({e["eventId"] for e in events}) == 2550
        assert sorted(set(sub.delivered_ids())) == sorted(e["eventId"] for e in events)
    finally:
        await sub.stop()

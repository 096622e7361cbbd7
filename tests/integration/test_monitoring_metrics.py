"""What a Prometheus scrape of a real relay shows: poll runs and source health under `relay serve`, the oldest
pending delivery's age and the store's availability from an in-process relay on a real SQLite file."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiohttp import web
from conftest import make_app
from helpers import HUB_TOKEN, base_config, relay_process, sample_event, until, write_config
from prometheus_client.parser import text_string_to_metric_families
from subscriber import subscriber_config

from relay._net import bound_port
from relay.events import Event
from relay.store import DeliveryPlan, NewEvent

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a /metrics body, keyed by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


class Stock:
    """A JSON API of three stock records that answers 500 while `failing` is set."""

    def __init__(self) -> None:
        self.failing = False
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.failing:
            return web.json_response({"error": "database offline"}, status=500)
        items = [{"id": f"{i:03d}", "sku": f"BOX-{i}", "wh": "MAIN", "qty": i} for i in range(3)]
        return web.json_response({"items": items})


@pytest.fixture
async def stock() -> AsyncIterator[tuple[Stock, str]]:
    api = Stock()
    app = web.Application()
    app.router.add_get("/stock", api.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield api, f"http://127.0.0.1:{bound_port(site)}/stock"
    await runner.cleanup()


def _server(config_path: Path) -> dict[str, Any]:
    server: dict[str, Any] = yaml.safe_load(config_path.read_text())["server"]
    return server


def _poll_config(tmp_path: Path, url: str) -> dict[str, Any]:
    return base_config(
        tmp_path,
        sources=[
            {
                "name": "wms",
                "kind": "http-json",
                "resources": [
                    {
                        "url": url + "?api_key=s3cret-key",
                        "channel": "inventory/synced",
                        "records_path": "items",
                        "key": "id",
                        "every": "300ms",
                        "jitter": 0,
                        "mapping": {
                            "fields": {
                                "partNumber": "sku",
                                "warehouse": "wh",
                                "onHand": {"path": "qty", "type": "number"},
                            }
                        },
                    }
                ],
            }
        ],
    )


@pytest.mark.slow  # a `relay serve` process: left out of `make check`
async def test_scrape_shows_poll_success_then_failure_then_recovery(tmp_path: Path, stock: tuple[Stock, str]) -> None:
    api, url = stock
    resource = {"source": "wms", "resource": f"0:{url}"}  # the API key in the query is not published
    config_path = write_config(tmp_path, _poll_config(tmp_path, url))
    started = time.time()
    with relay_process(config_path, tmp_path) as relay:
        await relay.wait_ready()
        async with aiohttp.ClientSession() as session:

            async def scrape() -> Samples:
                async with session.get(relay.base_url + "/metrics") as r:
                    assert r.status == 200
                    text = await r.text()
                assert "s3cret-key" not in text
                return parse(text)

            async def runs(outcome: str) -> float:
                return value(await scrape(), "relay_poll_runs_total", **resource, outcome=outcome) or 0.0

            await until(lambda: runs("success"), timeout=20)
            ok = await scrape()
            assert value(ok, "relay_source_up", source="wms") == 1
            assert value(ok, "relay_poll_interval_seconds", **resource) == 0.3
            last_success = value(ok, "relay_poll_last_success_timestamp_seconds", **resource)
            assert last_success is not None
            assert started <= last_success <= time.time()
            assert value(ok, "relay_poll_runs_total", **resource, outcome="error") is None

            api.failing = True
            await until(lambda: runs("error"), timeout=20)
            failed = await scrape()
            assert value(failed, "relay_source_up", source="wms") == 0
            stale = value(failed, "relay_poll_last_success_timestamp_seconds", **resource)
            assert stale is not None
            assert stale < time.time()
            completed_runs = sum(
                value(failed, "relay_poll_runs_total", **resource, outcome=o) or 0.0 for o in ("success", "error")
            )
            assert value(failed, "relay_poll_duration_seconds_count", **resource) == completed_runs

            api.failing = False

            async def recovered() -> bool:
                samples = await scrape()
                fresh = value(samples, "relay_poll_last_success_timestamp_seconds", **resource) or 0.0
                return value(samples, "relay_source_up", source="wms") == 1 and fresh > stale

            await until(recovered, timeout=20)

            # Removed from the configuration, the source stops exporting its poll series (and alerting).
            config_path.write_text(yaml.safe_dump(base_config(tmp_path, server=_server(config_path))))
            relay.signal(signal.SIGHUP)

            async def forgotten() -> bool:
                samples = await scrape()
                return not any(name.startswith(("relay_poll_", "relay_source_up")) for name, _ in samples)

            await until(forgotten, timeout=20)


def _old_event(event_id: str, received_at: datetime) -> Event:
    payload = sample_event("order/synced", event_id)
    return Event(
        event_id=event_id,
        channel="order/synced",
        source="hub",
        tenant_id=None,
        entity_key=None,
        version=None,
        occurred_at=received_at,
        received_at=received_at,
        payload=orjson.dumps(payload),
    )


async def test_scrape_shows_oldest_pending_age_and_a_lost_store(tmp_path: Path) -> None:
    data = base_config(
        tmp_path,
        subscribers=[
            subscriber_config("shop", "http://127.0.0.1:9/hooks"),
            subscriber_config("idle", "http://127.0.0.1:9/other"),
        ],
    )
    app, _ = await make_app(tmp_path, data)  # no dispatcher: deliveries stay pending
    try:
        hour_ago = datetime.now(UTC) - timedelta(hours=1)
        await app.store.ingest([NewEvent(_old_event("evt-old", hour_ago), [DeliveryPlan("shop")])])

        async def scrape() -> Samples:
            r = await app.client.get("/metrics")
            assert r.status == 200
            return parse(await r.text())

        samples = await scrape()
        assert value(samples, "relay_store_up") == 1
        age_s = value(samples, "relay_oldest_pending_age_seconds", subscriber="shop")
        assert age_s is not None
        assert 3600 <= age_s < 3600 + 60
        assert value(samples, "relay_oldest_pending_age_seconds", subscriber="idle") == 0
        failures_before = value(samples, "relay_store_commit_failures_total") or 0.0

        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"relay.db{suffix}").unlink(missing_ok=True)
        refused = await app.client.post(
            "/v1/sources/hub/events",
            data=orjson.dumps(sample_event("order/synced", "evt-after")),
            headers={"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"},
        )
        assert refused.status == 503
        lost = await scrape()
        assert value(lost, "relay_store_up") == 0
        assert (value(lost, "relay_store_commit_failures_total") or 0.0) >= failures_before + 1
        # The last known age stays exported rather than dropping to 0 while the store cannot be read.
        assert value(lost, "relay_oldest_pending_age_seconds", subscriber="shop") == age_s
    finally:
        await app.client.close()
        await app.store.close()

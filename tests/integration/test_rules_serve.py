"""Low-stock alerts from `relay serve`: edge-triggered per key, once across SIGKILL, restarts and replays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from helpers import HUB_TOKEN, WHSEC, arun_cli, base_config, relay_process, sample_event, until, write_config
from subscriber import Subscriber

pytestmark = pytest.mark.slow

HEADERS = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}
SEQUENCE = [50, 12, 9, 7, 15, 25, 8]
ALERTS = ("inventory/low-stock", "inventory/stock-restored")


def _stock(n: int, available: int) -> dict[str, Any]:
    return sample_event(
        "inventory/synced",
        f"stock-{n}",
        partNumber="BRK-20A",
        warehouse="MAIN",
        onHand=available + 2,
        available=available,
        lastTransactionDate=f"2026-11-20T10:00:{n:02d}Z",
    )


async def _post_all(url: str, events: list[dict[str, Any]]) -> list[int]:
    statuses = []
    async with aiohttp.ClientSession() as session:
        for body in events:
            async with session.post(url + "/v1/sources/hub/events", data=orjson.dumps(body), headers=HEADERS) as r:
                statuses.append(r.status)
    return statuses


def _alerts(sub: Subscriber) -> list[tuple[str, int, str]]:
    """The alert events received, each once: as a receiver does, a redelivery (same `webhook-id`) is dropped — an
    alert received just before the SIGKILL but not yet recorded as delivered is sent again after the restart."""
    alerts: dict[str, tuple[str, int, str]] = {}
    for r in sub.delivered:
        if r.headers["relay-channel"] in ALERTS and r.event_id not in alerts:
            data = r.payload["data"]
            alerts[r.event_id] = (r.headers["relay-channel"], data["available"], data["triggeringEventId"])
    return list(alerts.values())


async def test_stock_sequence_alerts_once_each_across_sigkill_and_replay(tmp_path: Path) -> None:
    sub = Subscriber()
    await sub.start()
    rule = {
        "name": "low-stock",
        "on": "inventory/synced",
        "when": "data.available <= 10",
        "clear_when": "data.available > 20",
        "emit": "inventory/low-stock",
        "emit_clear": "inventory/stock-restored",
    }
    storefront = {
        "name": "storefront",
        "url": sub.url,
        "secrets": [WHSEC],
        "channels": ["inventory/*"],
        "ordering": "per-key",
        "allow_private_network": True,
    }
    # A 1 s lease: an alert the subscriber had received but the killed relay had not yet recorded stays leased by
    # the dead process until its lease runs out, and holds back the later alerts of its key (per-key order).
    data = base_config(tmp_path, rules=[rule], subscribers=[storefront], delivery={"lease": "1s"})
    config_path = write_config(tmp_path, data)
    events = [_stock(n, available) for n, available in enumerate(SEQUENCE)]
    try:
        with relay_process(config_path, tmp_path) as relay:
            await relay.wait_ready()
            assert await _post_all(relay.base_url, events[:3]) == [202, 202, 202]
            await until(lambda: len(_alerts(sub)) == 1, timeout=15)
            relay.kill()  # SIGKILL after the first alert
        with relay_process(config_path, tmp_path) as relay:
            await relay.wait_ready()
            # The events before the kill again (a source's retry): duplicates, no second alert.
            assert await _post_all(relay.base_url, events) == [200, 200, 200, 202, 202, 202, 202]
            await until(lambda: len(_alerts(sub)) == 3, timeout=15)
            await until(lambda: sum(r.headers["relay-channel"] == "inventory/synced" for r in sub.delivered) >= 7)
            replayed = await arun_cli("replay", "-c", str(config_path), "--channel", "inventory/synced")
            assert replayed.returncode == 0, replayed.stderr
            await until(lambda: sum(r.headers.get("relay-replay") == "true" for r in sub.delivered) == 7, timeout=15)
        assert _alerts(sub) == [
            ("inventory/low-stock", 9, "stock-2"),
            ("inventory/stock-restored", 25, "stock-5"),
            ("inventory/low-stock", 8, "stock-6"),
        ]
        low = next(r for r in sub.delivered if r.headers["relay-channel"] == "inventory/low-stock")
        assert low.verified
        assert low.event_id == "low-stock.stock-2"
        assert low.payload["data"] == {
            "partNumber": "BRK-20A",
            "warehouse": "MAIN",
            "key": "BRK-20A|MAIN",
            "available": 9,
            "threshold": "data.available <= 10",
            "triggeringEventId": "stock-2",
            "rule": "low-stock",
        }
    finally:
        assert sub.runner is not None
        await sub.runner.cleanup()

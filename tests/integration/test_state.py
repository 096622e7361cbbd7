"""The current state of every key: the latest event by version, kept in the event's own transaction."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from conftest import App, make_app
from helpers import HUB_TOKEN, base_config, run_cli, sample_event, write_config

ADMIN = "admin-token-for-state"
STATE = "state-reader-token"
PUSH = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}


@pytest.fixture
async def state_app(tmp_path: Path) -> Any:
    data = base_config(tmp_path, admin={"tokens": [ADMIN]}, state={"tokens": [STATE]})
    application, _ = await make_app(tmp_path, data)
    yield application
    await application.client.close()
    await application.store.close()


def _inventory(event_id: str, part: str, warehouse: str, version: int, available: int) -> dict[str, Any]:
    stamp = f"2026-11-20T10:{version // 60:02d}:{version % 60:02d}Z"
    return sample_event(
        "inventory/synced",
        event_id,
        partNumber=part,
        warehouse=warehouse,
        available=available,
        lastTransactionDate=stamp,
    )


async def _get(app: App, path: str, token: str = STATE) -> tuple[int, Any]:
    async with app.client.get(path, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, orjson.loads(await resp.read())


async def test_each_key_answers_its_highest_version_after_out_of_order_events(state_app: App) -> None:
    rng = random.Random(18)
    keys = [(f"P-{n:03d}", "MAIN" if n % 2 else "EAST") for n in range(50)]
    # 20 versions of each of 50 keys, 1,000 events in shuffled order: arrival order is not version order.
    events = [(key, version) for key in keys for version in range(20)]
    rng.shuffle(events)
    for n, ((part, warehouse), version) in enumerate(events):
        body = _inventory(f"inv-{n}", part, warehouse, version, available=1000 + version)
        async with state_app.client.post("/v1/sources/hub/events", data=orjson.dumps(body), headers=PUSH) as resp:
            assert resp.status == 202
    for part, warehouse in keys:
        status, body = await _get(state_app, f"/v1/state/inventory/{quote(f'{part}|{warehouse}', safe='')}")
        assert status == 200
        assert body["data"]["available"] == 1019
        assert (body["channel"], body["entityKey"], body["deleted"]) == (
            "inventory/synced",
            f"{part}|{warehouse}",
            False,
        )
        assert body["version"] == "2026-11-20T10:00:19Z"
        assert body["eventId"].startswith("inv-")
        assert body["receivedAt"].endswith("Z")

    deletion = sample_event("inventory/synced", "gone-1")
    deletion.update(documentType="DeleteInventory")
    deletion["data"] = {"partNumber": "P-001", "warehouse": "MAIN", "deletionDate": "2026-11-20T11:00:00Z"}
    async with state_app.client.post(
        "/v1/sources/hub/events/inventory/deleted", data=orjson.dumps(deletion), headers=PUSH
    ) as resp:
        assert resp.status == 202
    status, body = await _get(state_app, "/v1/state/inventory/P-001%7CMAIN", token=ADMIN)
    assert (status, body["deleted"], body["channel"], body["eventId"]) == (200, True, "inventory/deleted", "gone-1")

    status, listed = await _get(state_app, "/v1/state/inventory?prefix=P-00&limit=5")
    assert status == 200
    assert [item["entityKey"] for item in listed["items"]] == [
        "P-000|EAST",
        "P-001|MAIN",
        "P-002|EAST",
        "P-003|MAIN",
        "P-004|EAST",
    ]
    assert listed["next"] == "P-004|EAST"


async def test_state_needs_a_state_or_admin_token_and_unknown_keys_are_404(state_app: App) -> None:
    assert (await _get(state_app, "/v1/state/inventory/X%7CY", token=HUB_TOKEN))[0] == 401
    status, body = await _get(state_app, "/v1/state/inventory/X%7CY")
    assert (status, body["error"]) == (404, "not_found")
    assert (await _get(state_app, "/v1/state/inventory?limit=0"))[0] == 400


def test_relay_state_show_prints_the_latest_event_of_a_key(tmp_path: Path) -> None:
    import asyncio

    async def load() -> None:
        application, _ = await make_app(tmp_path, base_config(tmp_path))
        try:
            for n, available in enumerate([5, 7]):
                body = _inventory(f"cli-{n}", "P-9", "MAIN", n, available)
                async with application.client.post(
                    "/v1/sources/hub/events", data=orjson.dumps(body), headers=PUSH
                ) as resp:
                    assert resp.status == 202
        finally:
            await application.client.close()
            await application.store.close()

    asyncio.run(load())
    config = write_config(tmp_path, base_config(tmp_path))
    done = run_cli("state", "show", "inventory", "P-9|MAIN", "--json", "-c", str(config))
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["data"]["available"] == 7
    missing = run_cli("state", "show", "inventory", "P-0|MAIN", "-c", str(config))
    assert missing.returncode == 1
    assert "no state for inventory key 'P-0|MAIN'" in missing.stderr

"""Live availability lookups through the SX.e and X3 simulators: single flight, cache, store fallback, 504."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import App, make_app
from helpers import HUB_TOKEN, base_config, sample_event

from relay.sim.ion import running_ion_simulator
from relay.sim.sxe import SxeSimulator
from relay.sim.x3 import running_x3_simulator

LOOKUP_TOKEN = "storefront-lookup-token"
AUTH = {"Authorization": f"Bearer {LOOKUP_TOKEN}"}
QUANTITY = "sxapiicgetwhseproductdataquantityv3"


def _lookup(**over: Any) -> dict[str, Any]:
    return {"auth": {"type": "bearer", "tokens": [LOOKUP_TOKEN]}, "timeout": "500ms", "cache_ttl": "5s", **over}


@pytest.fixture
async def sxe_app(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple[App, SxeSimulator]]:
    sxe = SxeSimulator()
    sxe.set_stock("BRK-20A", "MAIN", on_hand=40, committed=6)
    sxe.set_stock("BRK-20A", "EAST", on_hand=3)
    lookup = getattr(request, "param", {})
    async with running_ion_simulator() as (ion, base_url):
        sxe.install(ion)
        ionapi = ion.write_ionapi(tmp_path / "halloran.ionapi", base_url)
        source = {
            "name": "halloran-sxe",
            "kind": "sxe",
            "ionapi_file": str(ionapi),
            "timezone": "America/Chicago",
            "feeds": [{"feed": "icsw", "channel": "inventory/synced", "every": "1h"}],
            "lookup": _lookup(**lookup),
        }
        data = base_config(tmp_path)
        data["sources"].append(source)
        application, _ = await make_app(tmp_path, data)
        try:
            yield application, sxe
        finally:
            await application.client.close()
            await application.store.close()


async def _get(app: App, query: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    path = f"/v1/sources/halloran-sxe/availability?{query}"
    async with app.client.get(path, headers=AUTH if headers is None else headers) as resp:
        return resp.status, orjson.loads(await resp.read())


async def test_live_lookup_of_one_warehouse_and_of_every_warehouse(sxe_app: tuple[App, SxeSimulator]) -> None:
    app, sxe = sxe_app
    status, body = await _get(app, "part=BRK-20A&warehouse=MAIN")
    assert status == 200
    assert (body["part"], body["stale"], body["origin"]) == ("BRK-20A", False, "live")
    assert body["warehouses"] == [
        {"warehouse": "MAIN", "onHand": 40.0, "allocated": 6.0, "available": 34.0, "unitOfMeasure": None}
    ]
    status, body = await _get(app, "part=BRK-20A")
    assert status == 200
    assert [(w["warehouse"], w["available"]) for w in body["warehouses"]] == [("EAST", 3.0), ("MAIN", 34.0)]
    assert sxe.calls["sxapiicproductavailbywhse"] == 1
    assert sxe.calls[QUANTITY] == 3


async def test_200_concurrent_identical_lookups_make_one_erp_call_then_hit_the_cache(
    sxe_app: tuple[App, SxeSimulator],
) -> None:
    app, sxe = sxe_app
    sxe.lookup_delay_s = 0.1  # long enough that all 200 overlap the first call
    answers = await asyncio.gather(*(_get(app, "part=BRK-20A&warehouse=MAIN") for _ in range(200)))
    assert {status for status, _ in answers} == {200}
    assert {body["warehouses"][0]["available"] for _, body in answers} == {34.0}
    assert sxe.calls[QUANTITY] == 1
    sxe.set_stock("BRK-20A", "MAIN", on_hand=1)
    status, body = await _get(app, "part=BRK-20A&warehouse=MAIN")
    assert (status, body["warehouses"][0]["available"], body["origin"]) == (200, 34.0, "live")
    assert sxe.calls[QUANTITY] == 1  # within cache_ttl: no second ERP call
    async with app.client.get("/metrics") as resp:
        text = await resp.text()
    assert 'relay_lookup_cache_total{cache="hit",source="halloran-sxe"}' in text
    assert 'relay_lookup_seconds_count{origin="live",source="halloran-sxe"}' in text


async def test_slow_erp_answers_from_the_store_within_timeout_with_its_age(sxe_app: tuple[App, SxeSimulator]) -> None:
    app, sxe = sxe_app
    stored = sample_event("inventory/synced", "inv-1", partNumber="BRK-20A", warehouse="MAIN", onHand=12, available=9)
    headers = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}
    async with app.client.post("/v1/sources/hub/events", data=orjson.dumps(stored), headers=headers) as resp:
        assert resp.status == 202
    await asyncio.sleep(0.2)  # the stored state has an age to report
    sxe.lookup_delay_s = 5.0
    started = time.monotonic()
    status, body = await _get(app, "part=BRK-20A&warehouse=MAIN")
    elapsed = time.monotonic() - started
    assert status == 200
    assert elapsed < 0.5 + 0.4  # the 500 ms timeout plus a margin
    assert (body["stale"], body["origin"], body["warehouses"][0]["available"]) == (True, "store", 9)
    assert 0.2 <= body["ageSeconds"] < 5
    async with app.client.get("/metrics") as resp:
        assert 'relay_lookup_erp_errors_total{error="timeout",source="halloran-sxe"} 1.0' in await resp.text()


async def test_erp_down_and_nothing_stored_is_504_and_unknown_part_is_404(sxe_app: tuple[App, SxeSimulator]) -> None:
    app, sxe = sxe_app
    status, body = await _get(app, "part=NOPE&warehouse=MAIN")
    assert (status, body["error"]) == (404, "unknown_part")
    sxe.lookup_down = True
    status, body = await _get(app, "part=BRK-30A&warehouse=MAIN")
    assert (status, body["error"]) == (504, "lookup_unavailable")


async def test_lookups_need_the_lookup_credentials(sxe_app: tuple[App, SxeSimulator]) -> None:
    app, _ = sxe_app
    assert (await _get(app, "part=BRK-20A", headers={}))[0] == 401
    assert (await _get(app, "part=BRK-20A", headers={"Authorization": f"Bearer {HUB_TOKEN}"}))[0] == 401
    assert (await _get(app, "warehouse=MAIN"))[0] == 400


async def test_post_looks_up_many_parts(sxe_app: tuple[App, SxeSimulator]) -> None:
    app, _ = sxe_app
    body = {"parts": ["BRK-20A", "NOPE"], "warehouse": "MAIN"}
    async with app.client.post("/v1/sources/halloran-sxe/availability", json=body, headers=AUTH) as resp:
        assert resp.status == 200
        answer = await resp.json()
    assert [r["part"] for r in answer["results"]] == ["BRK-20A"]
    assert (answer["unknown"], answer["unavailable"]) == (["NOPE"], [])
    too_many = {"parts": [f"P-{n}" for n in range(201)]}
    async with app.client.post("/v1/sources/halloran-sxe/availability", json=too_many, headers=AUTH) as resp:
        assert resp.status == 400
        assert "at most 200" in (await resp.json())["message"]


async def test_x3_lookup_batches_parts_into_one_itmmvt_query(tmp_path: Path) -> None:
    async with running_x3_simulator() as (x3, base_url):
        x3.seed_records("ITMMVT", 0)
        x3.set_stock("WID-1", "FR011", on_hand=30, allocated=5)
        x3.set_stock("WID-2", "FR011", on_hand=8, allocated=0)
        data = base_config(tmp_path)
        data["sources"].append(
            {
                "name": "aldgate-x3",
                "kind": "x3",
                "base_url": base_url,
                "folder": "ALDGATE",
                "auth": {"type": "basic", "username": "admin", "password": "aldgate"},
                "resources": [{"class": "ITMMVT", "channel": "inventory/synced", "every": "1h"}],
                "lookup": _lookup(),
            }
        )
        app, _ = await make_app(tmp_path, data)
        try:
            before = x3.lookup_calls
            body = {"parts": ["WID-1", "WID-2", "WID-3"]}
            async with app.client.post("/v1/sources/aldgate-x3/availability", json=body, headers=AUTH) as resp:
                assert resp.status == 200
                answer = await resp.json()
            assert x3.lookup_calls == before + 1
            assert [(r["part"], r["warehouses"][0]["available"]) for r in answer["results"]] == [
                ("WID-1", 25.0),
                ("WID-2", 8.0),
            ]
            assert answer["unknown"] == ["WID-3"]
        finally:
            await app.client.close()
            await app.store.close()

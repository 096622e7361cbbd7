"""Onboarding a connection against the simulators: custom fields, discovery, dry runs by key, the permissions
checklist, schema drift and source health."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from conftest import start_stack, stop_stack
from helpers import arun_cli, base_config, until, write_config
from subscriber import Subscriber, subscriber_config

from relay.config import config_from_mapping
from relay.poll import load_builders
from relay.poll.engine import Poller
from relay.poll.scheduler import build_source
from relay.sim.ion import IonSimulator, running_ion_simulator
from relay.sim.sxe import SxeSimulator
from relay.sim.x3 import X3Simulator, running_x3_simulator
from relay.spec import builtin_spec_paths, load_specs

BASIC = {"type": "basic", "username": "admin", "password": "aldgate"}


def lead_time_days(record: dict[str, Any]) -> str:
    """Halloran-style availability code: lead time in days, as X3 keeps a customer-added field (text)."""
    return str(len(str(record["ITMREF"])) % 9 + 2)


@pytest.fixture
async def x3() -> AsyncIterator[tuple[X3Simulator, str]]:
    async with running_x3_simulator(seed_data=False) as (sim, base_url):
        yield sim, base_url


@pytest.fixture
async def sxe(tmp_path: Path) -> AsyncIterator[tuple[SxeSimulator, IonSimulator, Path]]:
    sim = SxeSimulator()
    async with running_ion_simulator() as (ion, base_url):
        sim.install(ion)
        yield sim, ion, ion.write_ionapi(tmp_path / "halloran.ionapi", base_url)


def x3_source(base_url: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "aldgate-x3", "kind": "x3", "base_url": base_url, "folder": "ALDGATE", "auth": BASIC,
            "resources": resources}  # fmt: skip


def sxe_source(ionapi: Path, feeds: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "halloran-sxe", "kind": "sxe", "ionapi_file": str(ionapi), "timezone": "America/Chicago",
            "feeds": feeds}  # fmt: skip


async def _poll_into(stack: Any, source: dict[str, Any]) -> None:
    config = config_from_mapping({"sources": [source]})
    load_builders()
    async with aiohttp.ClientSession() as session:
        built = build_source(config.sources[0], session, stack.runtime.specs)
        assert built is not None
        fetcher, resources = built
        for resource in resources:
            poller = Poller(store=stack.store, specs=stack.runtime.specs, router=stack.runtime.ingestor.router,
                            source=source["name"], fetcher=fetcher, resource=resource)  # fmt: skip
            report = await poller.poll_once()
            assert report.invalid == 0


# ------------------------------------------------------------------------------------------ custom fields


async def test_custom_fields_reach_a_subscriber_inside_extensions(
    tmp_path: Path, x3: tuple[X3Simulator, str], sxe: tuple[SxeSimulator, IonSimulator, Path]
) -> None:
    x3_sim, base_url = x3
    x3_sim.seed_records("ITMMVT", 4)
    x3_sim.set_field("ITMMVT", "ZLEADTIME", lead_time_days)
    sxe_sim, _, ionapi = sxe
    sxe_sim.seed_rows("poeh", 3)
    sxe_sim.set_field("poeh", "user5", lambda row: f"DOCK-{int(row['pono']) % 4}")
    receiver = Subscriber()
    url = await receiver.start()
    stack = await start_stack(
        tmp_path, base_config(tmp_path, subscribers=[subscriber_config("dashboard", url, channels=["*"])])
    )
    try:
        await _poll_into(stack, x3_source(base_url, [{
            "class": "ITMMVT", "channel": "inventory/synced",
            "mapping": {"fields": {"extensions.leadTimeDays": {"path": "ZLEADTIME", "type": "integer"}}},
        }]))  # fmt: skip
        await _poll_into(stack, sxe_source(ionapi, [{
            "feed": "poeh", "channel": "purchaseorder/synced",
            "mapping": {"fields": {"extensions.receivingDock": "user5"}},
        }]))  # fmt: skip
        await until(lambda: len(receiver.delivered) == 7)
    finally:
        await stop_stack(stack)
        await receiver.stop()
    specs = load_specs(builtin_spec_paths())
    by_key: dict[str, dict[str, Any]] = {}
    for item in receiver.delivered:
        assert specs.validate(item.headers["relay-channel"], item.payload) == []
        data = item.payload["data"]
        by_key[data.get("purchaseOrderNumber") or f"{data['partNumber']}|{data['warehouse']}"] = data
    for record in x3_sim.records["ITMMVT"].values():
        data = by_key[f"{record['ITMREF']}|{record['STOFCY']}"]
        assert data["extensions"] == {"leadTimeDays": int(record["ZLEADTIME"])}
    assert by_key["300001-00"]["extensions"] == {"receivingDock": "DOCK-1"}


async def test_a_custom_field_of_the_wrong_shape_is_refused_by_the_spec() -> None:
    specs = load_specs(builtin_spec_paths())
    payload = {"eventId": "e1", "documentType": "SyncPurchaseOrder", "timestamp": "2026-11-20T07:00:00Z",
               "data": {"purchaseOrderNumber": "P1", "extensions": {"dock": {"nested": 1}}}}  # fmt: skip
    (issue,) = specs.validate("purchaseorder/synced", payload)
    assert "extensions" in issue.path
    payload["data"]["extensions"] = {"dock": "D1", "leadTimeDays": 4}
    assert specs.validate("purchaseorder/synced", payload) == []


# ------------------------------------------------------------------------------------------ discovery


async def test_discover_lists_customer_added_fields_with_a_suggestion_and_stores_nothing(
    tmp_path: Path, x3: tuple[X3Simulator, str], sxe: tuple[SxeSimulator, IonSimulator, Path]
) -> None:
    x3_sim, base_url = x3
    x3_sim.seed_records("ITMMVT", 30)
    x3_sim.seed_records("BPCUSTOMER", 5)
    x3_sim.set_field("ITMMVT", "ZLEADTIME", lead_time_days)
    sxe_sim, _, ionapi = sxe
    sxe_sim.seed_rows("icsw", 12)
    sxe_sim.set_field("icsw", "user5", lambda row: 3 if row["whse"] == "MAIN" else None)
    config = base_config(tmp_path, sources=[
        x3_source(base_url, [{"class": "ITMMVT", "channel": "inventory/synced"},
                             {"class": "BPCUSTOMER", "channel": "customer/synced"}]),
        sxe_source(ionapi, [{"feed": "icsw", "channel": "inventory/synced"}]),
    ])  # fmt: skip
    path = write_config(tmp_path, config)

    result = await arun_cli("discover", "aldgate-x3", "--sample", "10", "-c", str(path))
    assert result.returncode == 0, result.stderr
    draft = yaml.safe_load(result.stdout)  # the draft is YAML as it prints
    assert [r["class"] for r in draft["resources"]] == ["ITMMVT", "BPCUSTOMER"]
    assert "#   ZLEADTIME: string, 100% filled" in result.stdout
    assert '# extensions.zleadtime: "ZLEADTIME"   # custom field (100% filled)' in result.stdout
    itmmvt = draft["resources"][0]["mapping"]["fields"]
    assert itmmvt["partNumber"] == "ITMREF"
    assert itmmvt["onHand"] == {"path": "PHYSTO", "type": "number"}
    assert "#   BPCNAM: string, 100% filled, e.g. " in result.stdout
    assert not {"Thames", "Mercia", "Wessex"} & set(result.stdout.replace('"', " ").split())  # names masked

    result = await arun_cli("discover", "halloran-sxe", "--json", "--out", str(tmp_path / "d.json"), "-c", str(path))
    assert result.returncode == 0, result.stderr
    (icsw,) = json.loads((tmp_path / "d.json").read_text())["resources"]
    assert (icsw["feed"], icsw["sampled"]) == ("icsw", 12)
    custom = {c["path"]: c for c in icsw["customFields"]}
    assert custom["user5"] == {"path": "user5", "suggestion": "extensions.user5", "type": "integer",
                               "fillRate": 0.3333}  # fmt: skip
    assert not {"prod", "icswRowID"} & set(custom)  # mapped by default; an API row id
    assert {p["canonical"]: p["how"] for p in icsw["proposals"]}["partNumber"] == "default"

    unknown = await arun_cli("discover", "aldgate-x3", "--resource", "SORDER", "-c", str(path))
    assert unknown.returncode == 1
    assert "aldgate-x3 has no resource 'SORDER' (it has ITMMVT, BPCUSTOMER)" in unknown.stderr
    assert not (tmp_path / "relay.db").exists()


# ------------------------------------------------------------------------------------------ dry run by keys


async def test_dry_run_by_keys_shows_each_record_beside_its_source_values_and_stores_nothing(
    tmp_path: Path, x3: tuple[X3Simulator, str]
) -> None:
    sim, base_url = x3
    sim.seed_records("SORDER", 260)
    keys = sorted(sim.records["SORDER"])[30:230]
    broken = keys[17]
    sim.records["SORDER"][broken]["ORDDAT"] = "0000-00-00"  # an ERP's empty date: not a date subscribers accept
    (tmp_path / "orders.txt").write_text("# 200 orders of the first customers\n" + "\n".join(keys) + "\n\n")
    config = base_config(tmp_path, sources=[x3_source(base_url, [{"class": "SORDER", "channel": "order/synced"}])])
    path = write_config(tmp_path, config)

    result = await arun_cli("poll", "aldgate-x3", "--dry-run", "--keys", str(tmp_path / "orders.txt"),
                            "--format", "json", "-c", str(path))  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["key"] for r in rows] == keys
    failing = [r for r in rows if r["status"] != "ok"]
    assert [r["key"] for r in failing] == [broken]
    (reason,) = failing[0]["problems"]
    assert reason == '$.data.orderDate: "0000-00-00" is not a "date"'
    first = {f["canonical"]: f for f in rows[0]["fields"]}
    record = sim.records["SORDER"][keys[0]]
    assert first["totalAmount"] == {"canonical": "totalAmount", "value": record["ORDINVATI"], "path": "ORDINVATI",
                                    "source": record["ORDINVATI"]}  # fmt: skip
    assert rows[0]["event"]["data"]["orderNumber"] == keys[0]
    assert "200 record(s), 1 would not be delivered; nothing was stored" in result.stderr

    result = await arun_cli("poll", "aldgate-x3", "--dry-run", "--keys", str(tmp_path / "orders.txt"),
                            "--format", "csv", "-c", str(path))  # fmt: skip
    lines = result.stdout.splitlines()
    assert len(lines) == 201
    assert lines[0].startswith("resource,channel,key,status,problems,orderNumber,orderNumber source,")
    assert next(line for line in lines if line.split(",")[2] == broken).split(",")[3] == "invalid"

    result = await arun_cli("poll", "aldgate-x3", "--dry-run", "--limit", "25", "--format", "json", "-c", str(path))
    assert len(json.loads(result.stdout)) == 25  # records in total
    (tmp_path / "few.txt").write_text("SO000001\nSO999999\n")
    result = await arun_cli("poll", "aldgate-x3", "--dry-run", "--keys", str(tmp_path / "few.txt"), "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "SO999999" in result.stdout
    assert "not found" in result.stdout
    assert "PHYSTO" not in result.stdout
    assert "ORDINVATI=" in result.stdout
    assert not (tmp_path / "relay.db").exists()


async def test_dry_run_of_200_skus_prints_200_rows_and_the_reason_of_a_failing_one(
    tmp_path: Path, x3: tuple[X3Simulator, str]
) -> None:
    sim, base_url = x3
    sim.seed_records("ITMMVT", 230)
    records = sorted(sim.records["ITMMVT"])[10:210]
    skus = [r.replace("~", "|") for r in records]  # the inventory key: part|warehouse (ITMREF, STOFCY)
    broken = skus[42]
    for record in sim.records["ITMMVT"].values():
        record["STU"] = "EA"  # the stock unit, mapped below
    sim.records["ITMMVT"][records[42]]["STU"] = 12
    (tmp_path / "skus.txt").write_text("\n".join(skus) + "\n")
    # A draft mapping that guessed the unit's type from a numeric sample: the one numeric unit is what breaks.
    unit = {"path": "STU", "type": "number"}
    resource = {"class": "ITMMVT", "channel": "inventory/synced", "mapping": {"fields": {"unitOfMeasure": unit}}}
    config = base_config(tmp_path, sources=[x3_source(base_url, [resource])])
    path = write_config(tmp_path, config)

    result = await arun_cli("poll", "aldgate-x3", "--dry-run", "--keys", str(tmp_path / "skus.txt"),
                            "--format", "json", "-c", str(path))  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 200
    assert [r["key"] for r in rows] == skus
    failing = [r for r in rows if r["status"] != "ok"]
    assert [r["key"] for r in failing] == [broken]
    assert failing[0]["problems"] == ['$.data.unitOfMeasure: 12 is not of type "string"'], failing[0]
    fields = {f["canonical"]: f for f in rows[0]["fields"]}
    assert fields["onHand"]["path"] == "PHYSTO"
    assert fields["onHand"]["source"] == sim.records["ITMMVT"][records[0]]["PHYSTO"]
    assert not (tmp_path / "relay.db").exists()


# ------------------------------------------------------------------------------------------ permissions checklist


async def test_probe_prints_a_permissions_checklist_with_the_grant_a_refused_resource_needs(
    tmp_path: Path, x3: tuple[X3Simulator, str], sxe: tuple[SxeSimulator, IonSimulator, Path]
) -> None:
    x3_sim, base_url = x3
    x3_sim.seed_records("BPCUSTOMER", 3)
    x3_sim.seed_records("ITMMVT", 3)
    x3_sim.class_status["ITMMVT"] = 403
    sxe_sim, _, ionapi = sxe
    sxe_sim.seed_rows("icsw", 3)
    sxe_sim.seed_rows("poeh", 3)
    sxe_sim.table_status["poeh"] = 403
    config = base_config(tmp_path, sources=[
        x3_source(base_url, [{"class": "BPCUSTOMER", "channel": "customer/synced"},
                             {"class": "ITMMVT", "channel": "inventory/synced", "representation": "ZITMMVT"}]),
        sxe_source(ionapi, [{"feed": "icsw", "channel": "inventory/synced"},
                            {"feed": "poeh", "channel": "purchaseorder/synced"}]),
        {"name": "halloran-ion", "kind": "ion-ims", "auth": {"type": "bearer", "tokens": ["t0ken"]},
         "accepted_documents": ["Sync.ItemMaster", "Sync.SalesOrder"]},
    ])  # fmt: skip
    path = write_config(tmp_path, config)
    result = await arun_cli("check-config", "--probe", "-c", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "aldgate-x3 BPCUSTOMER: [answered] class BPCUSTOMER, representation BPCUSTOMER (folder ALDGATE) for the " \
        "web-service user" in lines  # fmt: skip
    (itmmvt,) = [line for line in lines if line.startswith("aldgate-x3 ITMMVT:")]
    assert itmmvt.startswith(
        "aldgate-x3 ITMMVT: [refused] permission denied: grant class ITMMVT, representation ZITMMVT (folder ALDGATE)"
    )
    assert any(line.startswith("halloran-sxe icsw: [answered] ION API SX/rest/serviceinterface/proxy/FetchWhere "
                               "(SX.e table icsw)") for line in lines)  # fmt: skip
    (poeh,) = [line for line in lines if line.startswith("halloran-sxe poeh:")]
    assert "[refused] permission denied: grant ION API SX/rest/serviceinterface/proxy/FetchWhere (SX.e table poeh)" in (
        poeh
    )
    assert "halloran-ion Sync.ItemMaster: [accepted] IMS document Sync.ItemMaster" in result.stdout
    assert "halloran-ion Sync.SalesOrder: [accepted]" in result.stdout

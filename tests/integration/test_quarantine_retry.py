"""`relay quarantine retry`: a refused input passes after the configuration is fixed."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import make_app
from helpers import HUB_TOKEN, ainvoke_cli, base_config, sample_event, write_config


async def test_retry_after_a_config_fix(tmp_path: Path) -> None:
    data = base_config(tmp_path)
    data["sources"][0]["channels"] = ["order/synced"]
    config_path = write_config(tmp_path, data)
    app, _ = await make_app(tmp_path, data)
    try:
        async with app.client.post(
            "/v1/sources/hub/events",
            json=sample_event("invoice/synced", "inv-q"),
            headers={"Authorization": f"Bearer {HUB_TOKEN}"},
        ) as r:
            assert r.status == 404
            qid = (await r.json())["quarantineId"]
    finally:
        await app.client.close()
        await app.store.close()
    still = await ainvoke_cli("quarantine", "retry", "-c", str(config_path), str(qid))
    assert still.returncode == 1
    assert "is not accepted from this source" in still.stdout
    data["sources"][0].pop("channels")
    config_path.write_text(yaml.safe_dump(data))
    done = await ainvoke_cli("quarantine", "retry", "-c", str(config_path), str(qid))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "inv-q: accepted" in done.stdout
    listed = await ainvoke_cli("events", "list", "-c", str(config_path), "--json")
    assert [e["eventId"] for e in json.loads(listed.stdout)] == ["inv-q"]
    gone = await ainvoke_cli("quarantine", "show", "-c", str(config_path), str(qid))
    assert gone.returncode == 1


async def test_a_retried_bod_gets_the_id_of_its_live_redelivery(tmp_path: Path) -> None:
    """The IMS context (X-TenantId, variationId, fromLogicalId) is kept with the entry and used on retry."""
    import aiohttp

    from relay.sim.ion import BodFactory, make_ims_message, push_bods

    user, password = "ion", "ion-gateway-password"
    broken = {"Sync.SalesOrder": {"fields": {"orderDate": {"path": "SalesOrderHeader/Status/Code", "type": "date"}}}}
    source = {
        "name": "halloran-ion",
        "kind": "ion-ims",
        "auth": {"type": "basic", "username": user, "password": password},
        "mappings": broken,
    }
    data = base_config(tmp_path, sources=[source])
    config_path = write_config(tmp_path, data)
    bod = BodFactory(seed=21).sales_order()
    # Neither a TenantID nor a variationID in the XML: only the IMS request carries them.
    xml = bod.xml.replace(b"<TenantID>HALLORAN</TenantID>", b"").replace(
        f' variationID="{bod.variation_id}"'.encode(), b""
    )
    message = make_ims_message(bod, payload=xml, tenant_id="HALLORAN")
    app, _ = await make_app(tmp_path, data)
    try:
        url = str(app.client.make_url("/ion/halloran-ion"))
        async with aiohttp.ClientSession() as session:
            (refused,) = await push_bods(url, [message], session=session, auth=(user, password))
    finally:
        await app.client.close()
        await app.store.close()
    assert refused.status == 400, refused.body
    qid = refused.json()["quarantineId"]
    source.pop("mappings")
    config_path.write_text(yaml.safe_dump(data))
    done = await ainvoke_cli("quarantine", "retry", "-c", str(config_path), str(qid))
    assert done.returncode == 0, done.stdout + done.stderr
    retried_id = done.stdout.split(":")[0].strip()
    assert retried_id == message.expected_event_ids[0]
    app, _ = await make_app(tmp_path, data)
    try:
        url = str(app.client.make_url("/ion/halloran-ion"))
        async with aiohttp.ClientSession() as session:
            (live,) = await push_bods(url, [message], session=session, auth=(user, password))
    finally:
        await app.client.close()
        await app.store.close()
    assert live.status == 200, live.body  # a duplicate of the retried event, not a second event
    assert [e["eventId"] for e in live.json()["events"]] == [retried_id]

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

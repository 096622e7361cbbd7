"""`relay spec export` and `GET /asyncapi.yaml` produce documents the relay's own loader accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import App
from helpers import arun_cli

from relay.spec import builtin_spec_paths, load_specs


@pytest.mark.parametrize("version", ["2.6", "3.0"])
async def test_spec_export_round_trips(tmp_path: Path, version: str) -> None:
    out = tmp_path / f"relay-{version}.yaml"
    result = await arun_cli("spec", "export", "-c", str(tmp_path / "none.yaml"), "--asyncapi", version, "-o", str(out))
    assert result.returncode == 0, result.stderr
    document = yaml.safe_load(out.read_text())
    assert document["asyncapi"] == ("3.0.0" if version == "3.0" else "2.6.0")
    exported = load_specs([out])
    shipped = load_specs(builtin_spec_paths())
    assert set(exported.channels) == set(shipped.channels)
    bad = {"eventId": "x", "documentType": "SyncSalesOrder", "timestamp": "nope", "data": {}}
    assert exported.validate("order/synced", bad) == shipped.validate("order/synced", bad)
    assert exported.channel_for_document_type("SyncShipment") == "delivery/synced"


async def test_served_asyncapi_document(app: App, tmp_path: Path) -> None:
    async with app.client.get("/asyncapi.yaml?version=3.0") as r:
        assert r.status == 200
        text = await r.text()
    path = tmp_path / "served.yaml"
    path.write_text(text)
    assert set(load_specs([path]).channels) == set(app.runtime.specs.channels)

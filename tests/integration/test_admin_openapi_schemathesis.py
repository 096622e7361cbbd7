"""schemathesis against a running relay's admin API: generated requests from `GET /v1/admin/openapi.json` get no
5xx, and every answer matches the document (status, content type, schema)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
from helpers import HUB_TOKEN, base_config, relay_process, sample_event, write_config
from subscriber import Subscriber, subscriber_config

ADMIN_TOKEN = "admin-token-for-schemathesis-0123456789"
AUTH = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}
ST = Path(sys.executable).parent / "st"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.mark.slow
async def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(tmp_path: Path) -> None:
    sub = Subscriber(behaviour=lambda s, r, b: 500)
    await sub.start()
    data = base_config(
        tmp_path,
        subscribers=[subscriber_config("s", sub.url, retry={"schedule": ["10ms"], "max_age": "1h"})],
        admin={"tokens": [ADMIN_TOKEN]},
    )
    config_path = write_config(tmp_path, data)
    try:
        with relay_process(config_path, tmp_path) as relay:
            await relay.wait_ready()
            async with aiohttp.ClientSession() as session:
                # Something to list and show: events with deliveries (soon dead letters) and a quarantined input.
                for i in range(3):
                    body = orjson.dumps(sample_event("order/synced", f"st-{i}"))
                    async with session.post(f"{relay.base_url}/v1/sources/hub/events", data=body, headers=AUTH) as r:
                        assert r.status == 202
                async with session.post(f"{relay.base_url}/v1/sources/hub/events", data=b"{", headers=AUTH) as r:
                    assert r.status == 400
            command = [
                str(ST),
                "run",
                f"{relay.base_url}/v1/admin/openapi.json",
                "--header",
                f"Authorization: Bearer {ADMIN_TOKEN}",
                "--checks",
                CHECKS,
                "--max-examples",
                "15",
                "--phases",
                "examples,coverage,fuzzing",
                "--seed",
                "1",
                "--workers",
                "1",
                "--no-color",
                "--generation-database",
                "none",
            ]
            done = await asyncio.to_thread(
                subprocess.run, command, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
            )
            assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
            assert "internal error" not in relay.log_text().lower()
    finally:
        await sub.stop()

"""`relay ionapi inspect` against the ION simulator; `relay simulate ion` starts and answers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
from helpers import arun_cli, until

from relay.sim.ion import running_ion_simulator


async def test_ionapi_inspect_masks_secrets_and_fetches_a_token(tmp_path: Path) -> None:
    async with running_ion_simulator() as (sim, base_url):
        path = sim.write_ionapi(tmp_path / "h.ionapi", base_url)
        shown = await arun_cli("ionapi", "inspect", str(path), "--json")
        assert shown.returncode == 0, shown.stderr
        info = json.loads(shown.stdout)
        assert info["ti"] == "HALLORAN"
        assert sim.client_secret not in shown.stdout
        assert sim.sask not in shown.stdout
        with_token = await arun_cli("ionapi", "inspect", str(path), "--token", "--json")
        assert with_token.returncode == 0, with_token.stderr
        assert json.loads(with_token.stdout)["tokenExpiresAt"].endswith("Z")
        assert sim.token_requests == 1
        bad = json.loads(path.read_text())
        bad["cs"] = "wrong-secret"
        path.write_text(json.dumps(bad))
        refused = await arun_cli("ionapi", "inspect", str(path), "--token")
        assert refused.returncode == 1
        assert "wrong-secret" not in refused.stdout + refused.stderr


async def test_ionapi_inspect_names_problems(tmp_path: Path) -> None:
    missing = tmp_path / "missing.ionapi"
    missing.write_text(json.dumps({"ti": "T", "ci": "c", "cs": "s", "iu": "https://x", "pu": "https://y/as/"}))
    result = await arun_cli("ionapi", "inspect", str(missing))
    assert result.returncode == 1
    assert "'ot'" in result.stderr
    broken = tmp_path / "broken.ionapi"
    broken.write_text("{not json")
    result = await arun_cli("ionapi", "inspect", str(broken))
    assert result.returncode == 1
    assert "not valid JSON" in result.stderr


async def test_simulate_ion_serves_the_token_endpoint(tmp_path: Path) -> None:
    out = tmp_path / "sim.ionapi"
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "simulate", "ion", "--ionapi-out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
    )
    try:
        await until(out.exists, timeout=20)
        creds = json.loads(out.read_text())
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                creds["pu"] + creds["ot"],
                data={
                    "grant_type": "password",
                    "username": creds["saak"],
                    "password": creds["sask"],
                    "client_id": creds["ci"],
                    "client_secret": creds["cs"],
                },
            ) as r,
        ):
            assert r.status == 200
            assert (await r.json())["access_token"]
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait, 10)
        assert proc.stdout is not None
        proc.stdout.close()

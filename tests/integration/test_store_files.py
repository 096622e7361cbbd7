"""The SQLite files under a running `relay serve`: removed, replaced or made unwritable, nothing more is
acknowledged and `/readyz` says so; created, they are readable by the relay's user only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import aiohttp
import orjson
from helpers import HUB_TOKEN, base_config, relay_process, sample_event, write_config

HEADERS = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}


async def _post(session: aiohttp.ClientSession, base_url: str, event_id: str) -> aiohttp.ClientResponse:
    async with session.post(
        base_url + "/v1/sources/hub/events", data=orjson.dumps(sample_event("order/synced", event_id)), headers=HEADERS
    ) as r:
        await r.read()
        return r


async def _ready_status(session: aiohttp.ClientSession, base_url: str) -> int:
    async with session.get(base_url + "/readyz") as r:
        return r.status


def _store_files(db: Path) -> list[Path]:
    return [db.with_name(db.name + suffix) for suffix in ("", "-wal", "-shm")]


async def test_database_files_and_directory_are_private(tmp_path: Path) -> None:
    db = tmp_path / "state" / "erp" / "relay.db"
    data = base_config(tmp_path, store={"url": f"sqlite://{db}"})
    config_path = write_config(tmp_path, data)
    previous = os.umask(0o022)  # a shell's usual umask, outside systemd's UMask=0077
    try:
        with relay_process(config_path, tmp_path) as relay:
            await relay.wait_ready()
            async with aiohttp.ClientSession() as session:
                assert (await _post(session, relay.base_url, "e-1")).status == 202
            modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in _store_files(db)}
    finally:
        os.umask(previous)
    assert modes == {"relay.db": 0o600, "relay.db-wal": 0o600, "relay.db-shm": 0o600}
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(db.parent.parent.stat().st_mode) == 0o700

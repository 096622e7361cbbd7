"""The SQLite files under a running `relay serve`: removed, replaced or made unwritable, nothing more is
acknowledged and `/readyz` says so; created, they are readable by the relay's user only."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
from helpers import HUB_TOKEN, base_config, relay_process, sample_event, until, write_config

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


async def test_removed_database_answers_503_and_not_ready(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    config_path = write_config(tmp_path, base_config(tmp_path))
    with relay_process(config_path, tmp_path) as relay:
        await relay.wait_ready()
        async with aiohttp.ClientSession() as session:
            assert (await _post(session, relay.base_url, "before")).status == 202
            for path in _store_files(db):
                path.unlink()
            answers = [await _post(session, relay.base_url, f"after-{i}") for i in range(3)]
            assert [r.status for r in answers] == [503, 503, 503]
            assert all(r.headers["Retry-After"] for r in answers)
            assert await _ready_status(session, relay.base_url) == 503
        await until(lambda: "store file removed or replaced" in relay.log_text())
        assert str(db) in relay.log_text()


async def test_replaced_database_answers_503_and_not_ready(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    config_path = write_config(tmp_path, base_config(tmp_path))
    with relay_process(config_path, tmp_path) as relay:
        await relay.wait_ready()
        async with aiohttp.ClientSession() as session:
            assert (await _post(session, relay.base_url, "before")).status == 202
            # A restore that copies a backup over the path: same name, another file.
            shutil.copyfile(db, tmp_path / "backup.db")
            os.replace(tmp_path / "backup.db", db)
            assert (await _post(session, relay.base_url, "after")).status == 503
            assert await _ready_status(session, relay.base_url) == 503


@contextlib.contextmanager
def _immutable(paths: list[Path]) -> Iterator[None]:
    """`chattr +i`: unlike the mode bits, it stops root's writes too."""
    done: list[Path] = []
    try:
        for path in paths:
            subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
            done.append(path)
        yield
    finally:
        for path in done:
            subprocess.run(["chattr", "-i", str(path)], check=True, capture_output=True)


async def test_immutable_database_answers_503_and_not_ready(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    config_path = write_config(tmp_path, base_config(tmp_path))
    with relay_process(config_path, tmp_path) as relay:
        await relay.wait_ready()
        async with aiohttp.ClientSession() as session:
            assert (await _post(session, relay.base_url, "before")).status == 202
            # Not the -shm: SQLite maps it into memory, and a write to the mapping of an immutable file is SIGBUS.
            with _immutable(_store_files(db)[:2]):
                assert (await _post(session, relay.base_url, "after")).status == 503
                assert await _ready_status(session, relay.base_url) == 503
            assert (await _post(session, relay.base_url, "after")).status == 202
            assert await _ready_status(session, relay.base_url) == 200


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

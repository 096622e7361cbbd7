"""Start-up failures of `relay serve`: one line naming the problem, exit code 1, promptly; `check-config`
finds the same problems first."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import base_config, relay_process, run_cli, until, write_config

from relay.config import config_from_mapping
from relay.spec import load_specs

# Well under systemd's start timeout; the relay used to hang here for good.
PROMPT_S = 10.0


def _serve(config_path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = run_cli("serve", "-c", str(config_path), timeout=PROMPT_S + 20)
    return done, time.monotonic() - started


def _assert_one_line_failure(done: subprocess.CompletedProcess[str], elapsed_s: float, *needles: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert elapsed_s < PROMPT_S
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in done.stdout + done.stderr


@pytest.fixture
def taken_port() -> Any:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_serve_with_its_port_taken_exits_1_with_one_line(tmp_path: Path, taken_port: int) -> None:
    config_path = write_config(tmp_path, base_config(tmp_path, server={"listen": f"127.0.0.1:{taken_port}"}))
    done, elapsed = _serve(config_path)
    _assert_one_line_failure(done, elapsed, f"127.0.0.1:{taken_port}", "address already in use")

    checked = run_cli("check-config", "-c", str(config_path))
    assert checked.returncode == 1
    assert f"cannot listen on 127.0.0.1:{taken_port}: address already in use" in checked.stdout


async def test_a_listen_failure_during_start_releases_store_and_workers(tmp_path: Path, taken_port: int) -> None:
    """The port can be taken between the check and the bind: start() still fails cleanly."""
    from relay.daemon import Relay, StartupError

    data = base_config(tmp_path, server={"listen": f"127.0.0.1:{taken_port}"})
    config_path = write_config(tmp_path, data)
    config = config_from_mapping(data, base_dir=tmp_path)
    threads_before = threading.active_count()
    relay = Relay(config_path, config, load_specs(config.spec_paths))
    with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{taken_port}"):
        await relay.start()
    assert relay.services == []
    assert relay.store is None
    assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} == set()
    # The store's connection threads are gone too (they kept the process alive).
    await until(lambda: threading.active_count() <= threads_before, timeout=5)


def test_uncreatable_store_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file")
    config_path = write_config(tmp_path, base_config(tmp_path, store={"url": f"sqlite://{blocker}/sub/relay.db"}))

    checked = run_cli("check-config", "-c", str(config_path))
    assert checked.returncode == 1
    assert f"store: cannot create directory {blocker}/sub: {blocker} is not a directory" in checked.stdout

    done, elapsed = _serve(config_path)
    _assert_one_line_failure(done, elapsed, str(blocker))


def test_an_unreachable_postgresql_server_is_named_by_check_config_and_serve(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    url = f"postgresql://relay:pg-secret@127.0.0.1:{port}/relay?sslpassword=ssl-secret"
    config_path = write_config(tmp_path, base_config(tmp_path, store={"url": url}))

    checked = run_cli("check-config", "-c", str(config_path))
    assert checked.returncode == 1
    assert f"store: cannot connect to PostgreSQL at 127.0.0.1:{port}/relay: Connection refused" in checked.stdout
    assert "secret" not in checked.stdout + checked.stderr

    done, elapsed = _serve(config_path)
    _assert_one_line_failure(done, elapsed, f"127.0.0.1:{port}/relay", "Connection refused")
    assert "secret" not in done.stdout + done.stderr


def test_check_config_accepts_a_reachable_postgresql_store(tmp_path: Path, postgres_url: str) -> None:
    config_path = write_config(tmp_path, base_config(tmp_path, store={"url": postgres_url}))
    checked = run_cli("check-config", "-c", str(config_path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The user part is masked, as every URL the relay prints.
    assert f"store: postgresql://***@{postgres_url.split('@', 1)[1]}" in checked.stdout


def test_a_store_file_that_is_not_a_database_fails_promptly(tmp_path: Path) -> None:
    garbage = tmp_path / "relay.db"
    garbage.write_bytes(b"this is not SQLite\n" * 400)
    config_path = write_config(tmp_path, base_config(tmp_path))
    done, elapsed = _serve(config_path)
    _assert_one_line_failure(done, elapsed, str(garbage), "not a database")


def test_check_config_names_a_missing_secret_file(tmp_path: Path) -> None:
    missing = tmp_path / "credentials" / "hub-tokens"
    data = base_config(tmp_path)
    data["sources"][0]["auth"] = {"type": "bearer", "tokens_file": "credentials/hub-tokens"}
    config_path = write_config(tmp_path, data)
    checked = run_cli("check-config", "-c", str(config_path))
    assert checked.returncode == 1
    assert f"cannot read secret file {missing}: No such file or directory" in checked.stdout


def test_check_config_says_a_secret_file_is_not_text_without_printing_it(tmp_path: Path) -> None:
    (tmp_path / "hub-tokens").write_bytes(b"\xff\xfetoken-\x80-secret")
    data = base_config(tmp_path)
    data["sources"][0]["auth"] = {"type": "bearer", "tokens_file": "hub-tokens"}
    config_path = write_config(tmp_path, data)
    checked = run_cli("check-config", "-c", str(config_path))
    assert checked.returncode == 1
    assert f"secret file {tmp_path / 'hub-tokens'} is not UTF-8 text" in checked.stdout
    assert "Traceback" not in checked.stderr
    assert "secret" not in checked.stdout.replace("secret file", "")


def test_check_config_masks_store_url_secrets(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'relay.db'}?password=db-secret"
    config_path = write_config(tmp_path, base_config(tmp_path, store={"url": url}))
    checked = run_cli("check-config", "-c", str(config_path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"store: sqlite://{tmp_path / 'relay.db'}?password=***" in checked.stdout
    assert "db-secret" not in checked.stdout


async def test_check_config_next_to_the_running_relay_is_ok(tmp_path: Path) -> None:
    """Checking a file before a reload must not fail because the relay itself holds the address."""
    config_path = write_config(tmp_path, base_config(tmp_path))
    with relay_process(config_path, tmp_path) as relay:
        await relay.wait_ready()
        checked = await asyncio.to_thread(run_cli, "check-config", "-c", str(config_path))
    assert checked.returncode == 0, checked.stdout
    assert "(in use by a running relay)" in checked.stdout


# A relay with one extra route that fails, so that serve logs a traceback of its own.
_FAILING_ROUTE = """
import sys
import relay.http.admin
from relay.cli import main

async def fail(request):
    raise RuntimeError("deliberate failure for the log")

admin_routes = relay.http.admin.add_routes
relay.http.admin.add_routes = lambda app: (admin_routes(app), app.router.add_get("/fail", fail))
main(["serve", "-c", sys.argv[1]])
"""


async def test_a_traceback_logged_by_serve_does_not_mention_uvloop(tmp_path: Path) -> None:
    import aiohttp

    config_path = write_config(tmp_path, base_config(tmp_path))
    log_path = tmp_path / "relay.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _FAILING_ROUTE, str(config_path)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        base_url = f"http://{base_config_listen(config_path)}"
        async with aiohttp.ClientSession() as session:

            async def failed_once() -> bool:
                try:
                    async with session.get(base_url + "/fail") as resp:
                        return resp.status == 500
                except aiohttp.ClientError:
                    return False

            await until(failed_once, timeout=20, interval=0.05)
        await until(lambda: "deliberate failure for the log" in log_path.read_text(), timeout=10)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    text = log_path.read_text()
    assert "Traceback" in text
    assert "uvloop" not in text


def base_config_listen(config_path: Path) -> str:
    import yaml

    return str(yaml.safe_load(config_path.read_text())["server"]["listen"])

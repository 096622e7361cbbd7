"""Fixtures shared by every test suite."""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import base_config, write_config

from relay.config import Config, config_from_mapping
from relay.http.app import build_app
from relay.runtime import Runtime, open_configured_store
from relay.spec import SpecRegistry, load_specs
from relay.store import Store, create_store


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RELAY_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("RELAY_") or name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config_data(tmp_path: Path) -> dict[str, Any]:
    return base_config(tmp_path)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = create_store(f"sqlite://{tmp_path / 'store.db'}")
    await s.open()
    yield s
    await s.close()


# The PostgreSQL server the tests use (trust authentication); `make test` starts it when it is down.
POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"


def _pg_execute(url: str, sql: str) -> None:
    """Run `sql` on `url` from a thread of its own: fixtures may be set up while a test's event loop runs."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A throw-away database for this test session (dropped at its end); its URL.

    Fails, never skips, when the server is down: `make test` covers both backends or says why it cannot.
    """
    name = f"relay_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        _pg_execute(f"{POSTGRES_SERVER}/postgres", f'CREATE DATABASE "{name}"')
    except OSError as exc:  # refused, unreachable, timed out
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_SERVER} ({type(exc).__name__}: {exc}); the store tests run "
            "on it too. Start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            pytrace=False,
        )
    yield f"{POSTGRES_SERVER}/{name}"
    _pg_execute(f"{POSTGRES_SERVER}/postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """The session's database emptied for one test: the schema is dropped, the store migrates it afresh."""

    _pg_execute(postgres_database, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    return postgres_database


class App:
    """An in-process relay app (real store file, real HTTP on 127.0.0.1) for request-level tests."""

    def __init__(self, runtime: Runtime, client: TestClient[Any, Any]) -> None:
        self.runtime = runtime
        self.client = client
        self.store = runtime.store


@functools.cache
def _loaded_specs(paths: tuple[tuple[Path, int], ...]) -> SpecRegistry:
    return load_specs([path for path, _ in paths])


def cached_specs(paths: list[Path]) -> SpecRegistry:
    """The loaded documents, loaded once per set of files as they are now (a registry is read-only): loading them
    costs far more than most tests' own work."""
    return _loaded_specs(tuple((path, path.stat().st_mtime_ns) for path in paths))


async def make_app(tmp_path: Path, data: dict[str, Any]) -> tuple[App, TestServer]:
    config: Config = config_from_mapping(data, base_dir=tmp_path)
    write_config(tmp_path, data)
    specs = cached_specs(config.spec_paths)
    store = open_configured_store(config)  # as `relay serve` builds it, so store settings in `data` apply
    await store.open()
    runtime = Runtime.build(config, store, specs)
    server = TestServer(build_app(runtime), host="127.0.0.1")
    client = TestClient(server)
    await client.start_server()
    return App(runtime, client), server


@pytest.fixture
async def app(tmp_path: Path, config_data: dict[str, Any]) -> AsyncIterator[App]:
    application, _ = await make_app(tmp_path, config_data)
    yield application
    await application.client.close()
    await application.store.close()


class Stack(App):
    """An in-process relay with its dispatcher running."""

    dispatcher: Any


async def start_stack(tmp_path: Path, data: dict[str, Any]) -> Stack:
    from relay.deliver.dispatcher import Dispatcher

    application, _ = await make_app(tmp_path, data)
    stack = Stack(application.runtime, application.client)
    stack.dispatcher = Dispatcher(application.runtime)
    application.runtime.dispatcher = stack.dispatcher
    await stack.dispatcher.start()
    return stack


async def stop_stack(stack: Stack) -> None:
    await stack.dispatcher.stop(2.0)
    await stack.client.close()
    await stack.store.close()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the fault suite long (`make soak`): more kill cycles, longer clocks, bigger backlogs",
    )


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> bool:
    """True under `--soak`: fault tests scale their rounds and durations up."""
    return bool(request.config.getoption("--soak"))


# Tests that start `relay serve` or other processes, kill them, or load the machine: `make test` runs them,
# `make check` (the inner loop) leaves them out. Marked here in one list so the modules stay as they are.
SLOW_MODULES = frozenset(
    {
        "test_cli_ion",
        "test_delivery_crash",
        "test_demo",
        "test_fuzz_ingest",
        "test_hostile_fields",
        "test_bod_fuzz",
        "test_ion_ims",
        "test_poll_serve",
        "test_serve_crash",
        "test_serve_startup",
        "test_spec_export",
        "test_ssrf_spellings",
        "test_store_files",
        "test_systemd",
    }
)


# A module that starts `relay serve` or the `relay` command as processes, or a browser, is part of `make test`
# only: `make check` keeps to what runs in the test process and stays under a minute.
_PROCESS_MARKS = ("relay_process(", "RelayProcess(", "run_cli(", "chromium")


@functools.cache
def _starts_processes(path: Path) -> bool:
    if path.parent.name not in ("integration", "console"):
        return False
    text = path.read_text(encoding="utf-8")
    return any(mark in text for mark in _PROCESS_MARKS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.stem
        if module in SLOW_MODULES or item.path.parent.name == "faults" or _starts_processes(item.path):
            item.add_marker(pytest.mark.slow)

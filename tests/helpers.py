"""Shared test helpers: waiting on conditions, configs, and a real `relay serve` subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from relay.store import Completion

REPO = Path(__file__).resolve().parent.parent
ION_SPEC = REPO / "specs" / "asyncapi" / "ion-events.yaml"
HUB_TOKEN = "hub-token-0123456789"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> None:
    """Wait until `predicate()` is truthy (it may be async), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A minimal valid configuration: a SQLite file under tmp_path and one JSON push source `hub`."""
    config: dict[str, Any] = {
        "store": {"url": f"sqlite://{tmp_path / 'relay.db'}"},
        "server": {"listen": f"127.0.0.1:{free_port()}"},
        "logging": {"format": "json"},
        "sources": [{"name": "hub", "kind": "json-push", "auth": {"type": "bearer", "tokens": [HUB_TOKEN]}}],
        "subscribers": [],
    }
    config.update(sections)
    return config


def write_config(tmp_path: Path, config: dict[str, Any], name: str = "relay.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def completion(delivery_id: int, owner: str = "o", **fields: Any) -> Completion:
    """The record of a first attempt of `delivery_id` (subscriber `s`) by `owner` that delivered it; `fields`
    change any part of it (a failure, a retry, a fencing token)."""
    values: dict[str, Any] = {
        "delivery_id": delivery_id,
        "subscriber": "s",
        "owner": owner,
        "attempt": 1,
        "started_at": datetime.now(UTC),
        "duration_ms": 1.0,
        "status": 200,
        "error": None,
        "response_excerpt": None,
        "state": "delivered",
        "next_attempt_at": None,
    }
    return Completion(**(values | fields))


def sample_event(channel: str = "order/synced", event_id: str = "evt-1", **data: Any) -> dict[str, Any]:
    """A valid canonical event for each ION channel."""
    base: dict[str, tuple[str, dict[str, Any]]] = {
        "customer/synced": (
            "SyncCustomerPartyMaster",
            {"customerNumber": "C1001", "customerName": "Acme Electric", "lastModified": "2026-11-20T09:41:56Z"},
        ),
        "customer/deleted": ("DeleteCustomerPartyMaster", {"customerNumber": "C1001"}),
        "order/synced": (
            "SyncSalesOrder",
            {"orderNumber": "SO-1", "customerNumber": "C1001", "orderDate": "2026-11-20", "totalAmount": 120.5},
        ),
        "invoice/synced": ("SyncInvoice", {"invoiceNumber": "INV-1", "customerNumber": "C1001", "amount": 99.0}),
        "inventory/synced": (
            "SyncInventory",
            {"partNumber": "P-100", "warehouse": "MAIN", "onHand": 12, "available": 10},
        ),
    }
    doc_type, payload_data = base[channel]
    return {
        "eventId": event_id,
        "documentType": doc_type,
        "tenantId": "HALLORAN",
        "timestamp": "2026-11-20T09:41:56Z",
        "data": {**payload_data, **data},
    }


class RelayProcess:
    """`relay serve` as a real subprocess on 127.0.0.1."""

    def __init__(
        self,
        config_path: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        pipe_log: bool = False,
    ) -> None:
        self.config_path = config_path
        self.log_path = log_path
        cfg = yaml.safe_load(config_path.read_text())
        self.base_url = f"http://{cfg['server']['listen']}"
        self.env = {**os.environ, **(env or {})}
        # pipe_log: the log goes through a pipe, so a file size limit put on the relay cannot hit it.
        self.pipe_log = pipe_log
        self.proc: subprocess.Popen[bytes] | None = None
        self._copier: threading.Thread | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        piped = self.pipe_log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "serve", "-c", str(self.config_path)],
            stdout=subprocess.PIPE if piped else self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        if piped:
            self._copier = threading.Thread(target=self._copy_log, args=(self.proc, self._log), daemon=True)
            self._copier.start()

    @staticmethod
    def _copy_log(proc: subprocess.Popen[bytes], log: Any) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def wait_ready(self, timeout: float = 20.0) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"relay exited with {self.proc.returncode}: {self.log_text()[-2000:]}")
                try:
                    async with session.get(self.base_url + "/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await until(ready, timeout=timeout, interval=0.05)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        self.kill()
        if self._copier is not None and self.proc is not None and self.proc.stdout is not None:
            self._copier.join(timeout=10)
            self.proc.stdout.close()
        with contextlib.suppress(Exception):
            self._log.close()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


@contextlib.contextmanager
def relay_process(
    config_path: Path, tmp_path: Path, env: dict[str, str] | None = None, *, pipe_log: bool = False
) -> Iterator[RelayProcess]:
    proc = RelayProcess(config_path, tmp_path / "relay.log", env, pipe_log=pipe_log)
    proc.start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.close()


def invoke_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The `relay` command run in this process (click's CliRunner): what `run_cli` answers, without a new
    interpreter. For commands whose process behaviour (signals, exit on crash, another writer) is not tested.

    The command configures logging to its captured stderr; the test process's logging is put back after.
    """
    import logging

    import structlog
    from click.testing import CliRunner

    from relay.cli import main

    saved_config = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    finally:
        structlog.configure(**saved_config)
        root.handlers[:], root.level = saved_handlers, saved_level
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


async def ainvoke_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`invoke_cli` off the event loop (the command runs its own loop; an in-process relay keeps running)."""
    return await asyncio.to_thread(invoke_cli, *args, env=env)


async def arun_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """`run_cli` without blocking the event loop (an in-process relay keeps running meanwhile)."""
    return await asyncio.to_thread(run_cli, *args, env=env, timeout=timeout)

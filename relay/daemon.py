"""Wiring of `relay serve`: store, specs, HTTP, workers; signals, sd_notify, reload and drain.

Signal handlers only set events; the main task does the stopping: stop intake (503), let pending
commits finish, stop workers within the grace, close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog
from aiohttp import web

from relay import systemd
from relay._display import mask_url
from relay.config import Config, ConfigError, load_config
from relay.http.app import build_app
from relay.runtime import Runtime, open_configured_store
from relay.spec import SpecError, SpecRegistry, load_specs
from relay.store import Store, StoreUnavailable

log = structlog.get_logger(__name__)

__all__ = ["Relay", "Service", "StartupError", "open_configured_store", "run_serve", "startup_problems"]


class StartupError(Exception):
    """`relay serve` could not start; the message is one line naming the problem (exit code 1)."""


class Service(Protocol):
    """A background worker the daemon starts after the store and stops before it."""

    async def start(self) -> None: ...

    async def stop(self, grace_s: float) -> None: ...

    def reconfigure(self, runtime: Runtime) -> None: ...


def load_all(config_path: Path) -> tuple[Config, SpecRegistry]:
    """Config and specs, or ConfigError with every problem (a spec problem is a config problem)."""
    config = load_config(config_path)
    try:
        specs = load_specs(config.spec_paths)
    except SpecError as exc:
        raise ConfigError([f"specs: {exc}"]) from None
    from relay.rules import rule_problems

    problems = source_problems(config, specs) + rule_problems(config, specs)
    if problems:
        raise ConfigError(problems)
    return config, specs


def source_problems(config: Config, specs: SpecRegistry) -> list[str]:
    """What the models cannot see: channels missing from the specs, unreadable `.ionapi` files."""
    from relay.config import HttpJsonSource, IonImsSource, JsonPushSource, SxeSource, X3Source

    problems: list[str] = []
    for source in config.sources:
        if isinstance(source, JsonPushSource):
            problems.extend(
                f"sources[{source.name}].channels: {channel!r} is not in the loaded specs"
                for channel in source.channels or []
                if not specs.has_channel(channel)
            )
            continue
        polled: list[tuple[str, str, float | None]] = []
        if isinstance(source, X3Source):
            polled = [(r.class_, r.channel, r.reconcile_every_s) for r in source.resources]
        elif isinstance(source, SxeSource):
            polled = [(f.feed, f.channel, f.reconcile_every_s) for f in source.feeds]
            from relay.auth.ionapi import IonApiError, load_ionapi

            try:
                load_ionapi(source.ionapi_file)
            except IonApiError as exc:
                problems.append(f"sources[{source.name}].ionapi_file: {exc}")
        elif isinstance(source, HttpJsonSource):
            polled = [(r.url, r.channel, r.reconcile_every_s) for r in source.resources]
        elif isinstance(source, IonImsSource) and source.confirm is not None:
            from relay.auth.ionapi import IonApiError, load_ionapi

            try:
                load_ionapi(source.confirm.ionapi_file)
            except IonApiError as exc:
                problems.append(f"sources[{source.name}].confirm.ionapi_file: {exc}")
        for name, channel, reconcile in polled:
            where = f"sources[{source.name}] {name}"
            if not specs.has_channel(channel):
                problems.append(f"{where}: channel {channel!r} is not in the loaded specs")
            deleted = channel.rsplit("/", 1)[0] + "/deleted"
            if reconcile and not specs.has_channel(deleted):
                problems.append(f"{where}: reconcile_every needs channel {deleted!r}, which the loaded specs lack")
    return problems


def startup_problems(config: Config) -> list[str]:
    """What would stop `relay serve` before it starts: the store URL and directory, the listen address.

    Checked by `check-config` and by `serve` before it opens anything; one line per problem.
    """
    problems = store_problems(config.store.url)
    listen = listen_problem(config.server.host, config.server.port)
    if listen is not None:
        problems.append(f"server.listen: {listen}")
    return problems


def store_problems(url: str) -> list[str]:
    """A supported store URL whose database file can be created or written, or whose PostgreSQL server
    accepts a connection; one line per problem."""
    if url.startswith(("postgresql://", "postgres://")):
        from relay.store.postgres import postgres_problem

        problem = postgres_problem(url)
        return [problem] if problem else []
    from relay.store.sqlite import sqlite_path_from_url

    try:
        path = sqlite_path_from_url(url)
    except ValueError as exc:
        return [f"store.url: {exc}"]
    if path.exists():
        if not path.is_file():
            return [f"store: {path} is not a file"]
        if not os.access(path, os.R_OK | os.W_OK):
            return [f"store: {path} is not readable and writable by this user"]
    directory = path.parent
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [f"store: cannot create directory {directory}: {existing} is not a directory"]
    # SQLite creates its -wal and -shm files next to the database, so the directory must be writable too.
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "directory" if existing == directory else f"directory {directory}: {existing}"
        return [f"store: cannot write in {what} (permission denied)"]
    return []


def listen_problem(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on now (in use, not an address of this machine), or None.

    Binds a socket the way the server does and closes it at once.
    """
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio's create_server
            try:
                sock.bind(address)
            except OSError as exc:
                return _listen_error(host, port, exc)
    return None


def _listen_error(host: str, port: int, exc: OSError) -> str:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.EADDRINUSE:
        reason = "address already in use (is another relay running?)"
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"cannot listen on {where}: {reason}"


class Retention:
    """Deletes events older than `store.retention` once nothing is left to deliver, and quarantined inputs
    older than `quarantine.retention`, a batch at a time."""

    def __init__(self, runtime: Runtime, interval_s: float = 300.0) -> None:
        self.runtime = runtime
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")

    async def _run(self) -> None:
        from datetime import UTC, datetime, timedelta

        from relay.store import StoreUnavailable

        while True:
            config = self.runtime.config
            now = datetime.now(UTC)
            cutoff = now - timedelta(seconds=config.store.retention_s)
            quarantine_cutoff = now - timedelta(seconds=config.quarantine.retention_s)
            try:
                while (deleted := await self.runtime.store.prune(cutoff)) > 0:
                    log.info("retention pruned events", count=deleted)
                while (deleted := await self.runtime.store.prune_quarantine(quarantine_cutoff)) > 0:
                    log.info("retention pruned quarantine", count=deleted)
            except StoreUnavailable as exc:
                log.warning("retention pass failed", error=str(exc))
            await asyncio.sleep(self.interval_s)

    async def stop(self, grace_s: float) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def reconfigure(self, runtime: Runtime) -> None:
        self.runtime = runtime
        runtime.store.quarantine_max_bytes = runtime.config.quarantine.max_bytes


class Relay:
    """One running relay: owns the runtime, the HTTP site and the workers."""

    def __init__(self, config_path: Path, config: Config, specs: SpecRegistry) -> None:
        self.config_path = config_path
        self.config = config
        self.specs = specs
        self.store: Store | None = None
        self.runtime: Runtime | None = None
        self.runner: web.AppRunner | None = None
        self.services: list[Service] = []
        self.stop_requested = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.bound_port: int | None = None

    async def start(self) -> None:
        """Open the store, start the workers, listen.

        Raises:
            StartupError: one line naming the problem; whatever had started is released first.
        """
        try:
            await self._start()
        except BaseException as exc:
            await self._release(grace_s=0.0)
            if isinstance(exc, StartupError) or not isinstance(exc, Exception):
                raise
            log.debug("start-up failed", exc_info=True)
            raise StartupError(f"cannot start: {type(exc).__name__}: {exc}") from None

    async def _start(self) -> None:
        try:
            self.store = open_configured_store(self.config)
        except ValueError as exc:
            raise StartupError(f"store.url: {exc}") from None
        try:
            await self.store.open()
        except StoreUnavailable as exc:
            raise StartupError(f"store: {exc}") from None
        except OSError as exc:
            raise StartupError(f"store: {exc.filename or self.config.store.url}: {exc.strerror or exc}") from None
        self.runtime = Runtime.build(self.config, self.store, self.specs)
        from relay.deliver.dispatcher import Dispatcher
        from relay.poll import load_builders
        from relay.poll.scheduler import PollScheduler

        load_builders()
        dispatcher = Dispatcher(self.runtime)
        self.runtime.dispatcher = dispatcher
        poller = PollScheduler(self.runtime)
        self.runtime.poller = poller

        from relay.commands.executor import CommandExecutor

        executor = CommandExecutor(self.runtime)
        from relay.instances import Heartbeat

        services: list[Service] = [
            dispatcher,
            poller,
            Retention(self.runtime),
            executor,
            Heartbeat(self.runtime, dispatcher, poller),
        ]
        from relay.ingest.ion_confirm import ConfirmSender

        # Always started: ConfirmBODs queued before a restart or a reload that removed `confirm:` are still sent.
        self.runtime.confirms = ConfirmSender(self.runtime)
        services.append(self.runtime.confirms)
        for service in services:
            await service.start()
            self.services.append(service)  # only started services are stopped
        app = build_app(self.runtime)
        from relay.commands.http import COMMAND_NOTIFY

        app[COMMAND_NOTIFY].append(executor.notify)
        # keepalive_timeout also bounds how long a new connection may take to send its first request's
        # headers (aiohttp closes a connection still waiting for them), which stops slow-loris senders.
        self.runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=5.0,
            keepalive_timeout=self.config.server.read_timeout_s,
        )
        await self.runner.setup()
        server = self.config.server
        site = web.TCPSite(self.runner, server.host, server.port, backlog=1024, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(f"server.listen: {_listen_error(server.host, server.port, exc)}") from None
        sockets = getattr(site._server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else server.port
        log.info("relay listening", host=server.host, port=self.bound_port, store=mask_url(self.config.store.url))

    def reload(self) -> bool:
        """Re-read the configuration; keep the running one if the new one is invalid."""
        assert self.runtime is not None
        try:
            config, specs = load_all(self.config_path)
        except ConfigError as exc:
            log.error("reload rejected; keeping the running configuration", problems=exc.problems)
            return False
        self.config = config
        self.specs = specs
        self.runtime.apply_config(config, specs)
        for service in self.services:
            service.reconfigure(self.runtime)
        log.info("configuration reloaded", subscribers=len(config.subscribers), sources=len(config.sources))
        return True

    async def stop(self) -> None:
        grace = self.config.server.drain_grace_s
        if self.runtime is not None:
            self.runtime.draining = True
        log.info("draining", grace_s=grace)
        await self._release(grace)
        log.info("stopped")

    async def _release(self, grace_s: float) -> None:
        """Stop the started workers, the HTTP site and the store (each only if it was started)."""
        for service in reversed(self.services):
            with contextlib.suppress(Exception):
                await service.stop(grace_s)
        self.services = []
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.store is not None:
            await self.store.close()
            self.store = None


async def _watchdog(interval_s: float) -> None:
    while True:
        systemd.notify("WATCHDOG=1")
        await asyncio.sleep(interval_s)


async def run_serve(config_path: Path, *, on_started: Callable[[Relay], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    config, specs = load_all(config_path)
    relay = Relay(config_path, config, specs)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, relay.stop_requested.set)
    loop.add_signal_handler(signal.SIGINT, relay.stop_requested.set)
    loop.add_signal_handler(signal.SIGHUP, relay.reload_requested.set)
    # With a file size limit (systemd LimitFSIZE=) the default SIGXFSZ would kill the relay mid-commit; ignored,
    # the write fails with EFBIG, the commit rolls back and ingest answers 503 like on a full disk.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    await relay.start()
    systemd.notify("READY=1")
    if on_started is not None:
        on_started(relay)
    watchdog: asyncio.Task[None] | None = None
    if (interval := systemd.watchdog_interval_s()) is not None:
        watchdog = asyncio.create_task(_watchdog(interval))
    try:
        while not relay.stop_requested.is_set():
            stop_wait = asyncio.ensure_future(relay.stop_requested.wait())
            reload_wait = asyncio.ensure_future(relay.reload_requested.wait())
            await asyncio.wait({stop_wait, reload_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            reload_wait.cancel()
            if relay.reload_requested.is_set() and not relay.stop_requested.is_set():
                relay.reload_requested.clear()
                systemd.notify(f"RELOADING=1\nMONOTONIC_USEC={systemd.monotonic_usec()}")
                relay.reload()
                systemd.notify("READY=1")
    finally:
        systemd.notify("STOPPING=1")
        await relay.stop()
        if watchdog is not None:
            watchdog.cancel()
    return 0

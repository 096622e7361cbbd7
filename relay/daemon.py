"""Wiring of `relay serve`: store, specs, HTTP, workers; signals, sd_notify, reload and drain.

Signal handlers only set events; the main task does the stopping: stop intake (503), let pending
commits finish, stop workers within the grace, close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog
from aiohttp import web

from relay import systemd
from relay.config import Config, ConfigError, load_config
from relay.http.app import RouteInstaller, build_app
from relay.runtime import Runtime
from relay.spec import SpecError, SpecRegistry, load_specs
from relay.store import Store, create_store

log = structlog.get_logger(__name__)

__all__ = ["Relay", "Service", "open_configured_store", "run_serve"]


class Service(Protocol):
    """A background worker the daemon starts after the store and stops before it."""

    async def start(self) -> None: ...

    async def stop(self, grace_s: float) -> None: ...

    def reconfigure(self, runtime: Runtime) -> None: ...


ServiceFactory = Callable[[Runtime], Service]
# Filled by the modules that provide workers and routes (delivery, polling, ION) at import time.
SERVICE_FACTORIES: list[ServiceFactory] = []
ROUTE_INSTALLERS: list[RouteInstaller] = []


def open_configured_store(config: Config) -> Store:
    return create_store(
        config.store.url,
        synchronous=config.store.synchronous,
        batch_max=config.store.batch_max,
        busy_timeout_s=config.store.busy_timeout_s,
        quarantine_max_bytes=config.quarantine.max_bytes,
    )


def load_all(config_path: Path) -> tuple[Config, SpecRegistry]:
    """Config and specs, or ConfigError with every problem (a spec problem is a config problem)."""
    config = load_config(config_path)
    try:
        specs = load_specs(config.spec_paths)
    except SpecError as exc:
        raise ConfigError([f"specs: {exc}"]) from None
    problems = source_problems(config, specs)
    if problems:
        raise ConfigError(problems)
    return config, specs


def source_problems(config: Config, specs: SpecRegistry) -> list[str]:
    """What the models cannot see: channels missing from the specs, unreadable `.ionapi` files."""
    from relay.config import HttpJsonSource, JsonPushSource, SxeSource, X3Source

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
        for name, channel, reconcile in polled:
            where = f"sources[{source.name}] {name}"
            if not specs.has_channel(channel):
                problems.append(f"{where}: channel {channel!r} is not in the loaded specs")
            deleted = channel.rsplit("/", 1)[0] + "/deleted"
            if reconcile and not specs.has_channel(deleted):
                problems.append(f"{where}: reconcile_every needs channel {deleted!r}, which the loaded specs lack")
    return problems


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
        self.store = open_configured_store(self.config)
        await self.store.open()
        self.runtime = Runtime.build(self.config, self.store, self.specs)
        from relay.deliver.dispatcher import Dispatcher
        from relay.poll import load_builders
        from relay.poll.scheduler import PollScheduler

        load_builders()
        dispatcher = Dispatcher(self.runtime)
        self.runtime.dispatcher = dispatcher
        self.services = [
            dispatcher,
            PollScheduler(self.runtime),
            Retention(self.runtime),
            *(factory(self.runtime) for factory in SERVICE_FACTORIES),
        ]
        for service in self.services:
            await service.start()
        app = build_app(self.runtime, extra_routes=tuple(ROUTE_INSTALLERS))
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
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else server.port
        log.info("relay listening", host=server.host, port=self.bound_port, store=_redact(self.config.store.url))

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
        for service in reversed(self.services):
            with contextlib.suppress(Exception):
                await service.stop(grace)
        if self.runner is not None:
            await self.runner.cleanup()
        if self.store is not None:
            await self.store.close()
        log.info("stopped")


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest


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

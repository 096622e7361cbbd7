"""The measurements. Each scenario starts its own processes, measures, stops them, and returns plain data.

Placement (with two or more cores): the system under test (a bare server, the relay, or the bare client of
baseline B, which stands in for the relay's dispatcher) runs on one core; the load generator and the
webhook receivers run on the other, so the two sides never share a core and the baselines are measured
exactly like the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import experiments, profile
from bench.common import (
    PUSH_PATH,
    Child,
    Children,
    Cores,
    CpuSnapshot,
    LoadSnapshot,
    commit_stats,
    cpu_seconds,
    cpu_snapshot,
    cpu_usage,
    foreign_cpu_pct,
    load_snapshot,
    per_event_cost,
    percentiles,
    python_module,
    rss_kib,
    scrape_metrics,
    subscriber,
    wait_until_ready,
    write_relay_config,
)
from bench.loadgen import LoadSpec
from bench.pgserver import DbServer, cpu_between, throwaway_database

# Deliveries made by a relay process: its end-to-end histogram is observed once per delivered attempt.
DELIVERED_COUNT = "relay_webhook_end_to_end_seconds_count"


@dataclass(frozen=True)
class Settings:
    """How big each measurement is; `quick()` scales everything down to about a minute in total."""

    quick: bool = False
    warmup_s: float = 2.0
    duration_s: float = 20.0
    baseline_duration_s: float = 15.0
    connections: int = 64
    dup_ratio: float = 0.10
    fanout_subscribers: int = 3
    fanout_events: int = 20_000
    per_key_events: int = 3_000  # small: the per-key claim's cost grows with the square of the backlog
    latency_rate: float = 500.0
    latency_duration_s: float = 20.0
    stored_events: int = 1_000_000
    replay_events: int = 100_000
    idle_s: float = 3.0
    wait_limit_s: float = 240.0
    repeats: int = 3  # throughput scenarios run this many times, interleaved; the median is reported
    profile: bool = False
    keep_temp: bool = False
    experiment: str | None = None  # what-ifs from bench/experiments.py, comma-separated
    relay_pythonpath: str | None = None  # prepended to PYTHONPATH of relay processes (the uvloop what-if)

    @classmethod
    def quick_settings(cls, **over: Any) -> Settings:
        values: dict[str, Any] = {
            "quick": True,
            "warmup_s": 1.0,
            "duration_s": 3.0,
            "baseline_duration_s": 3.0,
            "fanout_events": 2_000,
            "per_key_events": 1_000,
            "latency_duration_s": 4.0,
            "stored_events": 100_000,
            "replay_events": 10_000,
            "idle_s": 1.0,
            "wait_limit_s": 60.0,
            "repeats": 1,
        }
        values.update(over)
        return cls(**values)


@dataclass
class Bench:
    settings: Settings
    cores: Cores
    tmp_root: Path

    # ------------------------------------------------------------------------------------ helpers

    @contextlib.asynccontextmanager
    async def workdir(self, name: str) -> AsyncIterator[Path]:
        path = Path(tempfile.mkdtemp(prefix=f"relay-bench-{name}-", dir=self.tmp_root))
        try:
            yield path
        finally:
            if not self.settings.keep_temp:
                shutil.rmtree(path, ignore_errors=True)

    async def prepare_store(self, children: Children, workdir: Path, db_path: Path) -> None:
        """Apply the run's experiment (if any) to the store file before relay serve opens it."""
        names = experiments.store_changes(self.settings.experiment)
        if not names:
            return
        if not _exists(db_path):
            await self.preload(children, workdir, {"db": str(db_path), "events": 0})
        for name in names:
            experiments.apply(name, db_path)

    @contextlib.asynccontextmanager
    async def store(self, postgres: bool) -> AsyncIterator[tuple[str | None, DbServer | None]]:
        """(store URL, database server) of a scenario: (None, None) for the SQLite file in its directory, or a
        throw-away PostgreSQL database created for it and dropped after it, even when it fails."""
        if not postgres:
            yield None, None
            return
        async with throwaway_database() as url:
            yield url, await DbServer.find(url)

    async def start_relay(
        self,
        children: Children,
        workdir: Path,
        *,
        synchronous: str = "FULL",
        subscribers: list[dict[str, Any]] | None = None,
        db_path: Path | None = None,
    ) -> tuple[Child, str, Path]:
        (started,) = await self.start_relays(
            children, workdir, synchronous=synchronous, subscribers=subscribers, db_path=db_path
        )
        return started

    async def start_relays(
        self,
        children: Children,
        workdir: Path,
        count: int = 1,
        *,
        synchronous: str = "FULL",
        subscribers: list[dict[str, Any]] | None = None,
        db_path: Path | None = None,
        store_url: str | None = None,
    ) -> list[tuple[Child, str, Path]]:
        """`count` `relay serve` processes, each with its own config and port, all on the system-under-test core;
        on one store (`store_url`, or the SQLite file). Returns (process, base URL, config path) of each, ready."""
        configs: list[tuple[Path, str, Path]] = []
        for i in range(count):
            folder = workdir if count == 1 else workdir / f"instance-{i + 1}"
            folder.mkdir(exist_ok=True)
            config_path, base_url = write_relay_config(
                folder, synchronous=synchronous, subscribers=subscribers or [], db_path=db_path, store_url=store_url
            )
            configs.append((folder, base_url, config_path))
        if store_url is None:
            await self.prepare_store(children, workdir, db_path or workdir / "relay.db")
        started = []
        for folder, base_url, config_path in configs:
            relay = await children.spawn(
                "relay serve" if count == 1 else f"relay serve {folder.name}",
                python_module("relay.cli", "serve", "-c", str(config_path)),
                cpus=self.cores.server,
                pythonpath=self.settings.relay_pythonpath,
                log_path=folder / "relay.log",
            )
            started.append((relay, base_url, config_path))
        # Started together, then waited for: with a backlog the dispatchers start before the HTTP listeners.
        for relay, base_url, _ in started:
            await wait_until_ready(relay, base_url)
        return started

    def placement(self, db: DbServer | None) -> dict[str, Any]:
        """Which CPUs the relays, the load side and the database server may run on."""
        out: dict[str, Any] = {
            "relays": sorted(self.cores.server) if self.cores.server else None,
            "load": sorted(self.cores.client) if self.cores.client else None,
        }
        if db is not None:
            out["postgres"] = db.describe()["cpus"]
        return out

    async def start_receivers(
        self, children: Children, count: int, *, record: bool = False
    ) -> tuple[Child, list[str], str]:
        args = ["receivers", "--count", str(count), "--status", "204"]
        receivers = await children.spawn(
            "receivers",
            python_module("bench.servers", *args, *(["--record"] if record else [])),
            cpus=self.cores.client,
            stdout_pipe=True,
        )
        ports = await receivers.read_json_line(30)
        urls = [f"http://127.0.0.1:{p}/hook" for p in ports["ports"]]
        return receivers, urls, f"http://127.0.0.1:{ports['stats_port']}"

    async def preload(self, children: Children, workdir: Path, spec: dict[str, Any]) -> dict[str, Any]:
        child = await children.spawn(
            "preload",
            python_module("bench.preload", orjson.dumps(spec).decode()),
            stdout_pipe=True,
            log_path=workdir / "preload.log",
        )
        result: dict[str, Any] = await child.read_json_line(self.settings.wait_limit_s)
        await child.process.wait()
        return result

    async def load(
        self,
        children: Children,
        spec: LoadSpec,
        *,
        cpus: frozenset[int] | None,
        server_pid: int | None = None,
        metrics_url: str | None = None,
        on_window: Callable[[float], Coroutine[Any, Any, Any]] | None = None,
        meter: Meter | None = None,
        more_metrics_urls: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Run the generator; measure the server's CPU (per thread) and the relay's metrics over its window.

        `on_window(seconds)` is started at the window start (used for profiles). `meter` (several relays, the
        database server) is read over the same window; the metrics of `more_metrics_urls` are added to those of
        `metrics_url` (one relay's metrics per instance).
        """
        urls = [metrics_url, *more_metrics_urls] if metrics_url else []
        gen = await children.spawn(
            "loadgen",
            python_module("bench.loadgen", orjson.dumps(asdict(spec)).decode()),
            cpus=cpus,
            stdout_pipe=True,
        )
        started = (await gen.read_json_line(30))["started"]
        limit = spec.warmup_s + spec.duration_s + spec.timeout_s + 30
        window_start = started + spec.warmup_s
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        cpu_before = cpu_snapshot(server_pid) if server_pid else None
        if meter is not None:
            meter.start()
        metrics_before = await scrape_all(urls) if urls else None
        side = asyncio.create_task(on_window(spec.duration_s)) if on_window is not None else None
        await asyncio.sleep(max(0.0, window_start + spec.duration_s - time.monotonic()))
        cpu_after = cpu_snapshot(server_pid) if server_pid else None
        window = meter.stop() if meter is not None else None
        metrics_after = await scrape_all(urls) if urls else None
        result: dict[str, Any] = await gen.read_json_line(limit)
        if window is not None:
            result["meter"] = window
        await gen.process.wait()
        if side is not None:
            result["profile"] = await side
        if cpu_before is not None and cpu_after is not None:
            result["server_cpu"] = cpu_usage(cpu_before, cpu_after)
        if metrics_before is not None and metrics_after is not None:
            stats = commit_stats(metrics_before, metrics_after)
            stats["commit_busy_pct"] = stats["commit_seconds"] / spec.duration_s * 100
            result["store"] = stats
        return result

    def profiler(self, children: Children, pid: int, name: str) -> Callable[[float], Coroutine[Any, Any, Any]] | None:
        if not self.settings.profile:
            return None

        async def run(seconds: float) -> Any:
            prefix = f"{self.settings.experiment}-" if self.settings.experiment else ""
            return await profile.record(children, pid, seconds, prefix + name)

        return run

    def push_spec(self, url: str, **over: Any) -> LoadSpec:
        values: dict[str, Any] = {
            "urls": [url],
            "connections": self.settings.connections,
            "duration_s": self.settings.duration_s,
            "warmup_s": self.settings.warmup_s,
            "dup_ratio": self.settings.dup_ratio,
            "kind": "push",
        }
        values.update(over)
        return LoadSpec(**values)

    # ------------------------------------------------------------------------------------ scenarios

    async def baseline_a(self) -> dict[str, Any]:
        """A bare aiohttp server answering 202 to the same POSTs the relay gets."""
        async with Children() as children:
            sink = await children.spawn(
                "sink",
                python_module("bench.servers", "sink", "--status", "202"),
                cpus=self.cores.server,
                stdout_pipe=True,
            )
            port = (await sink.read_json_line(30))["ports"][0]
            spec = self.push_spec(f"http://127.0.0.1:{port}{PUSH_PATH}", duration_s=self.settings.baseline_duration_s)
            result = await self.load(children, spec, cpus=self.cores.client, server_pid=sink.pid)
        return {
            "requests_per_s": result["rate_2xx"],
            "latency_ms": result["latency_ms"],
            "server_cpu": result.get("server_cpu"),
            "generator_cpu_pct": result["cpu_pct"],
            "errors": result["errors"],
            "by_status": result["by_status_window"],
            "window_s": spec.duration_s,
        }

    async def ingest(self, synchronous: str = "FULL", *, instances: int = 1, postgres: bool = False) -> dict[str, Any]:
        """`relay serve` with one JSON push source and no subscribers, 10 % duplicate event ids.

        On PostgreSQL (`postgres`), `instances` relays share one throw-away database and the generator spreads its
        connections over their listeners, as a load balancer would; `synchronous` is then not used.
        """
        name = f"pg-ingest-{instances}" if postgres else f"ingest-{synchronous.lower()}"
        async with self.workdir(name) as workdir, self.store(postgres) as (store_url, db), Children() as children:
            started = await self.start_relays(
                children, workdir, instances, synchronous=synchronous, store_url=store_url
            )
            relays = [relay for relay, _, _ in started]
            base_urls = [base_url for _, base_url, _ in started]
            relay, base_url = relays[0], base_urls[0]
            rss_before = rss_kib(relay.pid)
            push_urls = [u + PUSH_PATH for u in base_urls]
            spec = self.push_spec(push_urls[0], urls=push_urls, id_prefix=name)
            result = await self.load(
                children,
                spec,
                cpus=self.cores.client,
                server_pid=relay.pid,
                metrics_url=base_url,
                more_metrics_urls=base_urls[1:],
                on_window=self.profiler(children, relay.pid, name),
                meter=Meter([r.pid for r in relays], db),
            )
            rss_after = rss_kib(relay.pid)
            exit_codes = [await children_stop(r) for r in relays]
            stored = await count_events(store_url or f"sqlite://{workdir / 'relay.db'}")
        accepted_total = result["by_status_total"].get("202", 0)
        rates = result["rate_by_status"]
        window = result["meter"]
        accepted_each = [result["by_url_status_window"].get(u, {}).get("202", 0) for u in push_urls]
        out = {
            "store_backend": "postgresql" if postgres else "sqlite",
            "instances": instances,
            **({} if postgres else {"synchronous": synchronous}),
            "accepted_per_s": rates.get("202", 0.0),
            "duplicates_per_s": rates.get("200", 0.0),
            "requests_per_s": result["rate_2xx"],
            "other_statuses": {k: v for k, v in result["by_status_window"].items() if k not in ("200", "202")},
            "errors": result["errors"],
            "latency_ms": result["latency_ms"],
            "relay_cpu": result.get("server_cpu"),
            "relays_cpu": window["relay_cpu"],
            "cpu_per_event": cost_per_event(window, accepted_each),
            "placement": self.placement(db),
            "generator_cpu_pct": result["cpu_pct"],
            "store": result.get("store"),
            "rss_kib_before": rss_before,
            "rss_kib_after": rss_after,
            "accepted_total": accepted_total,
            "events_stored": stored,
            "stored_matches_accepted": stored == accepted_total,
            "exit_code": exit_codes[0],
            "exit_codes": exit_codes,
            "window_s": spec.duration_s,
            "foreign_cpu_window_pct": window["foreign_cpu_pct"],
        }
        if db is not None:
            out["postgres"] = db.describe()
            out["foreign_cpu_pct"] = window["foreign_cpu_pct"]  # the database server's work is this run's
        if "profile" in result:
            out["profile"] = result["profile"]
        return out

    async def baseline_b(self, n: int) -> dict[str, Any]:
        """A bare aiohttp client POSTing webhook-sized requests to `n` receivers, 64 connections each."""
        async with Children() as children:
            receivers, urls, _ = await self.start_receivers(children, n)
            spec = LoadSpec(
                urls=urls,
                connections=64 * n,
                duration_s=self.settings.baseline_duration_s,
                warmup_s=self.settings.warmup_s,
                kind="webhook",
                id_prefix="baseline-b",
            )
            result = await self.load(children, spec, cpus=self.cores.server, server_pid=receivers.pid)
        return {
            "posts_per_s": result["rate_2xx"],
            "latency_ms": result["latency_ms"],
            "client_cpu_pct": result["cpu_pct"],
            "receivers_cpu": result.get("server_cpu"),
            "errors": result["errors"],
            "by_status": result["by_status_window"],
            "receivers": n,
            "connections": spec.connections,
            "window_s": spec.duration_s,
        }

    async def fanout(
        self, n_subs: int, events: int, ordering: str = "none", *, instances: int = 1, postgres: bool = False
    ) -> dict[str, Any]:
        """Pre-load N events with a delivery each for `n_subs` subscribers, start the relay, time until all arrive.

        On PostgreSQL (`postgres`) the events are loaded into a throw-away database and `instances` relays
        deliver them together.
        """
        expected = events * n_subs
        name = f"pg-fanout-{instances}" if postgres else "fanout"
        async with self.workdir(name) as workdir, self.store(postgres) as (store_url, db), Children() as children:
            _, urls, stats_url = await self.start_receivers(children, n_subs)
            names = [f"s{i + 1}" for i in range(n_subs)]
            target = {"url": store_url} if store_url else {"db": str(workdir / "relay.db")}
            loaded = await self.preload(children, workdir, {**target, "events": events, "subscribers": names})
            pairs = zip(names, urls, strict=True)
            subs = [subscriber(name, url, max_in_flight=64, ordering=ordering) for name, url in pairs]
            # The dispatchers start before the HTTP listeners: the first deliveries may precede readiness.
            started = await self.start_relays(children, workdir, instances, subscribers=subs, store_url=store_url)
            relays = [relay for relay, _, _ in started]
            base_urls = [base_url for _, base_url, _ in started]
            relay = relays[0]
            ready_at = time.monotonic()
            cpu_before = cpu_snapshot(relay.pid)
            meter = Meter([r.pid for r in relays], db)
            meter.start()
            each_before = [await scrape_metrics(u) for u in base_urls]
            metrics_before = added(each_before)
            prof = self.profiler(children, relay.pid, f"fanout-{n_subs}-{ordering}")
            side = asyncio.create_task(prof(min(15.0, expected / 3000))) if prof is not None else None
            async with aiohttp.ClientSession() as session:
                stats = await wait_stats(
                    session, stats_url, lambda s: s["unique"] >= expected, self.settings.wait_limit_s, relays
                )
            cpu_after = cpu_snapshot(relay.pid)
            rss = rss_kib(relay.pid)
            await asyncio.sleep(0.5)  # let the last completions commit before reading the counters
            each_after = [await scrape_metrics(u) for u in base_urls]
            metrics_after = added(each_after)
            window = meter.stop()
            store = commit_stats(metrics_before, metrics_after)
            store["commit_busy_pct"] = store["commit_seconds"] / max(time.monotonic() - ready_at, 1e-9) * 100
            profile_result = await side if side is not None else None
            exit_codes = [await children_stop(r) for r in relays]
        span = (stats["last"] or 0) - (stats["first"] or 0)
        delivered_each = [
            a.get(DELIVERED_COUNT, 0.0) - b.get(DELIVERED_COUNT, 0.0)
            for b, a in zip(each_before, each_after, strict=True)
        ]
        out: dict[str, Any] = {
            "store_backend": "postgresql" if postgres else "sqlite",
            "instances": instances,
            "events": events,
            "subscribers": n_subs,
            "ordering": ordering,
            "deliveries_expected": expected,
            "deliveries_received": stats["total"],
            "unique_received": stats["unique"],
            "deliveries_per_s": stats["unique"] / span if span > 0 else 0.0,
            "seconds": span,
            "relay_cpu": cpu_usage(cpu_before, cpu_after),
            "relays_cpu": window["relay_cpu"],
            "cpu_per_event": cost_per_event(window, delivered_each),
            "placement": self.placement(db),
            "store": store,
            "rss_kib": rss,
            "preload": loaded,
            "exit_code": exit_codes[0],
            "exit_codes": exit_codes,
            "foreign_cpu_window_pct": window["foreign_cpu_pct"],
        }
        if db is not None:
            out["postgres"] = db.describe()
            out["foreign_cpu_pct"] = window["foreign_cpu_pct"]  # the database server's work is this run's
        if profile_result is not None:
            out["profile"] = profile_result
        return out

    async def latency(self, n_subs: int) -> dict[str, Any]:
        """Open-loop ingest at a fixed rate; time from the 202 answer to the receiver's arrival, per delivery."""
        s = self.settings
        async with self.workdir(f"latency{n_subs}") as workdir, Children() as children:
            _, urls, stats_url = await self.start_receivers(children, n_subs, record=True)
            subs = [subscriber(f"s{i + 1}", url, max_in_flight=64) for i, url in enumerate(urls)]
            relay, base_url, _ = await self.start_relay(children, workdir, subscribers=subs)
            record_path = workdir / "requests.json"
            spec = self.push_spec(
                base_url + PUSH_PATH,
                rate=s.latency_rate,
                duration_s=s.latency_duration_s,
                dup_ratio=0.0,
                record_path=str(record_path),
                id_prefix=f"latency{n_subs}",
            )
            result = await self.load(
                children,
                spec,
                cpus=self.cores.client,
                server_pid=relay.pid,
                metrics_url=base_url,
                on_window=self.profiler(children, relay.pid, f"latency{n_subs}"),
            )
            records = orjson.loads(record_path.read_bytes())
            accepted = [r for r in records if r[3] == 202]
            async with aiohttp.ClientSession() as session:
                await wait_stats(
                    session, stats_url, lambda st: st["unique"] >= len(accepted) * n_subs, 30, relay, strict=False
                )
                async with session.get(stats_url + "/receipts") as resp:
                    receipts = orjson.loads(await resp.read())
            exit_code = await children_stop(relay)
        sent_by_id = {r[0]: r for r in accepted}
        from_ack: list[float] = []
        from_send: list[float] = []
        window_start = result["window_start"]
        for _, event_id, arrived in receipts:
            req = sent_by_id.get(event_id)
            if req is None or req[1] < window_start:
                continue
            from_ack.append((arrived - req[2]) * 1000)
            from_send.append((arrived - req[1]) * 1000)
        in_window = [r for r in accepted if r[1] >= window_start]
        expected = len(in_window) * n_subs
        return {
            "subscribers": n_subs,
            "rate_target": s.latency_rate,
            "rate_achieved": len([r for r in records if r[1] >= window_start]) / spec.duration_s,
            "window_s": spec.duration_s,
            "ack_to_receipt_ms": percentiles(from_ack),
            "send_to_receipt_ms": percentiles(from_send),
            "ingest_ack_ms": percentiles([(r[2] - r[1]) * 1000 for r in in_window]),
            "delivered_before_ack_pct": sum(v < 0 for v in from_ack) / len(from_ack) * 100 if from_ack else 0.0,
            "deliveries_expected": expected,
            "deliveries_measured": len(from_ack),
            "non_202": {k: v for k, v in result["by_status_total"].items() if k != "202"},
            "errors": result["errors"],
            "relay_cpu": result.get("server_cpu"),
            "store": result.get("store"),
            "exit_code": exit_code,
            **({"profile": result["profile"]} if "profile" in result else {}),
        }

    async def rss_idle(self) -> dict[str, Any]:
        """RSS of a fresh relay (empty store, one subscriber) after sitting idle."""
        async with self.workdir("idle") as workdir, Children() as children:
            _, urls, _ = await self.start_receivers(children, 1)
            relay, _, _ = await self.start_relay(children, workdir, subscribers=[subscriber("idle", urls[0])])
            before = cpu_snapshot(relay.pid)
            await asyncio.sleep(self.settings.idle_s)
            rss = rss_kib(relay.pid)
            cpu = cpu_usage(before, cpu_snapshot(relay.pid))
            await children_stop(relay)
        return {"rss_kib": rss, "idle_cpu": cpu, "idle_s": self.settings.idle_s}

    async def replay(self) -> dict[str, Any]:
        """A store of N events; RSS at rest; then `relay replay` of the newest M while `relay serve` delivers."""
        s = self.settings
        step_us = 1000
        start = datetime.now().astimezone() - timedelta(microseconds=s.stored_events * step_us) - timedelta(minutes=5)
        received_from = start.astimezone().isoformat()
        since = start + timedelta(microseconds=(s.stored_events - s.replay_events) * step_us)
        async with self.workdir("replay") as workdir, Children() as children:
            loaded = await self.preload(
                children,
                workdir,
                {
                    "db": str(workdir / "relay.db"),
                    "events": s.stored_events,
                    "received_from": received_from,
                    "step_us": step_us,
                },
            )
            _, urls, stats_url = await self.start_receivers(children, 1)
            relay, _, config_path = await self.start_relay(
                children, workdir, subscribers=[subscriber("replay-target", urls[0], max_in_flight=64)]
            )
            await asyncio.sleep(s.idle_s)
            rss_stored = rss_kib(relay.pid)
            samples: list[tuple[float, int]] = []
            sampling = asyncio.create_task(sample_rss(relay.pid, samples))
            cpu_before = cpu_snapshot(relay.pid)
            cli_started = time.monotonic()
            cli = await children.spawn(
                "relay replay",
                python_module(
                    "relay.cli",
                    "replay",
                    "-c",
                    str(config_path),
                    "--subscriber",
                    "replay-target",
                    "--since",
                    since.isoformat(),
                    "--json",
                ),
                cpus=self.cores.client,
                stdout_pipe=True,
                log_path=workdir / "replay-cli.log",
                pythonpath=self.settings.relay_pythonpath,
            )
            prof = self.profiler(children, relay.pid, "replay")
            side = asyncio.create_task(prof(min(15.0, s.replay_events / 4000))) if prof is not None else None
            assert cli.process.stdout is not None
            cli_out = await asyncio.wait_for(cli.process.stdout.read(), s.wait_limit_s)
            cli_code = await cli.process.wait()
            cli_seconds = time.monotonic() - cli_started
            try:
                cli_result = orjson.loads(cli_out)
            except orjson.JSONDecodeError:
                raise RuntimeError(f"relay replay failed ({cli_code}): {cli_out!r} {cli.log_tail()}") from None
            async with aiohttp.ClientSession() as session:
                stats = await wait_stats(
                    session, stats_url, lambda st: st["unique"] >= s.replay_events, s.wait_limit_s, relay
                )
            cpu_after = cpu_snapshot(relay.pid)
            sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampling
            profile_result = await side if side is not None else None
            startup = await cli_startup_seconds(children, config_path)
            exit_code = await children_stop(relay)
        span = (stats["last"] or 0) - (stats["first"] or 0)
        values = [v for _, v in samples]
        deliveries = int(cli_result.get("deliveries", 0))
        out: dict[str, Any] = {
            "stored_events": loaded["events"],
            "preload": loaded,
            "rss_kib_with_stored_events": rss_stored,
            "replay_events": s.replay_events,
            "cli": {
                "deliveries_created": deliveries,
                "seconds": cli_seconds,
                "inserts_per_s": deliveries / cli_seconds if cli_seconds else 0.0,
                "startup_s": startup,
                "inserts_per_s_excluding_startup": deliveries / max(cli_seconds - startup, 1e-9),
                "exit_code": cli_code,
            },
            "delivered": stats["unique"],
            "duplicates_received": stats["total"] - stats["unique"],
            "deliveries_per_s": stats["unique"] / span if span > 0 else 0.0,
            "delivery_seconds": span,
            "end_to_end_seconds": (stats["last"] or cli_started) - cli_started,
            "end_to_end_per_s": stats["unique"] / max((stats["last"] or cli_started) - cli_started, 1e-9),
            "rss_kib_during_replay": {
                "min": min(values) if values else 0,
                "max": max(values) if values else 0,
                "first": values[0] if values else 0,
                "last": values[-1] if values else 0,
                "samples": len(values),
            },
            "relay_cpu": cpu_usage(cpu_before, cpu_after),
            "exit_code": exit_code,
        }
        if profile_result is not None:
            out["profile"] = profile_result
        return out


# ---------------------------------------------------------------------------------------- small helpers


def _exists(path: Path) -> bool:
    return path.exists()


async def children_stop(child: Child) -> int | None:
    from bench.common import stop

    return await stop(child)


@dataclass
class Meter:
    """CPU over one measured window: each relay process, the database server's processes that serve the run's
    database (PostgreSQL), and everything else on the machine."""

    pids: Sequence[int]
    db: DbServer | None = None
    _relays: list[CpuSnapshot] = field(default_factory=list)
    _db: dict[int, float] = field(default_factory=dict)
    _load: LoadSnapshot | None = None

    def start(self) -> None:
        self._load = load_snapshot()
        self._db = self.db.cpu() if self.db is not None else {}
        self._relays = [cpu_snapshot(pid) for pid in self.pids]

    def stop(self) -> dict[str, Any]:
        """relay_cpu_s (per relay), relay_cpu (% of a core, per relay), db_cpu_s, wall_s, and foreign_cpu_pct: the
        other processes' CPU in % of one core, with the database server's processes for this run counted as the
        run's own."""
        assert self._load is not None, "start() first"
        relays = [cpu_snapshot(pid) for pid in self.pids]
        db_cpu = cpu_between(self._db, self.db.cpu()) if self.db is not None else None
        load = load_snapshot()
        wall = max(load.at - self._load.at, 1e-9)
        foreign = foreign_cpu_pct(self._load, load) - (db_cpu or 0.0) / wall * 100
        return {
            "wall_s": wall,
            "relay_cpu_s": [cpu_seconds(b, a) for b, a in zip(self._relays, relays, strict=True)],
            "relay_cpu": [cpu_usage(b, a) for b, a in zip(self._relays, relays, strict=True)],
            "db_cpu_s": db_cpu,
            "foreign_cpu_pct": max(0.0, foreign),
        }


def cost_per_event(window: dict[str, Any], events_each: Sequence[float]) -> dict[str, Any]:
    """The relays' CPU µs per event (per instance and together) and the database server's, over one window."""
    relay = per_event_cost(window["relay_cpu_s"], events_each)
    db_cpu = window.get("db_cpu_s")
    events = relay["events"]
    return {
        "window_s": window["wall_s"],
        "relay": relay,
        "db_server": None
        if db_cpu is None
        else {"cpu_s": db_cpu, "us_per_event": db_cpu / events * 1e6 if events > 0 else None},
    }


async def scrape_all(base_urls: Sequence[str]) -> dict[str, float]:
    """The relays' metrics added together (one scrape per instance)."""
    return added([await scrape_metrics(url) for url in base_urls])


def added(scrapes: Sequence[dict[str, float]]) -> dict[str, float]:
    """Several relays' metrics (one `scrape_metrics` each) added together."""
    totals: dict[str, float] = {}
    for scrape in scrapes:
        for name, value in scrape.items():
            totals[name] = totals.get(name, 0.0) + value
    return totals


async def count_events(url: str) -> int:
    """Events in a stopped relay's store, through the store API."""
    from relay.store import create_store

    store = create_store(url)
    await store.open()
    try:
        return await store.count_events()
    finally:
        await store.close()


async def wait_stats(
    session: aiohttp.ClientSession,
    stats_url: str,
    done: Callable[[dict[str, Any]], bool],
    timeout_s: float,
    relay: Child | Sequence[Child],
    *,
    strict: bool = True,
) -> dict[str, Any]:
    """Poll the receivers' stats until `done(stats)`; fail (or, not strict, return) at the deadline or when a relay
    exits."""
    relays = [relay] if isinstance(relay, Child) else list(relay)
    deadline = time.monotonic() + timeout_s
    while True:
        async with session.get(stats_url + "/stats") as resp:
            stats: dict[str, Any] = orjson.loads(await resp.read())
        if done(stats):
            return stats
        for r in relays:
            if r.process.returncode is not None:
                raise RuntimeError(f"{r.name} exited with {r.process.returncode}: {r.log_tail()}")
        if time.monotonic() > deadline:
            if strict:
                raise RuntimeError(f"receivers incomplete after {timeout_s}s: {stats}")
            return stats
        await asyncio.sleep(0.05)


async def sample_rss(pid: int, samples: list[tuple[float, int]], interval_s: float = 0.1) -> None:
    while True:
        value = rss_kib(pid)
        if value:
            samples.append((time.monotonic(), value))
        await asyncio.sleep(interval_s)


async def cli_startup_seconds(children: Children, config_path: Path) -> float:
    """Wall time of a `relay` command that does no work: process start, imports, config and spec load."""
    started = time.monotonic()
    child = await children.spawn(
        "relay check-config", python_module("relay.cli", "check-config", "-c", str(config_path)), stdout_pipe=True
    )
    assert child.process.stdout is not None
    await child.process.stdout.read()
    await child.process.wait()
    return time.monotonic() - started

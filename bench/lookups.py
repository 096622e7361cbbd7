"""`make bench-lookups`: how fast live availability lookups answer, from the cache and from the ERP simulators.

    python -m bench.lookups [--duration 10] [--live-rate 100] [--no-pin] [--docs PATH]

`relay serve` runs in a subprocess (pinned to one core when there are two) with an SX.e source (through the ION
gateway simulator) and a Sage X3 source, each with a `lookup:` block. This process (pinned to the other core)
runs the simulators and an open-loop client that starts lookups at fixed instants whatever the answers do, and
measures each from its scheduled start (so a slow answer cannot hide the requests queued behind it):

- cache: 500 lookups/s of one part; after the first, every answer comes from the relay's cache.
- live SX.e, live X3: a different part in each lookup, so every one is an ERP call through the simulator.

The simulators' own handler time is measured in the same run around their availability handlers, so the live
figures can be read as "simulator + relay". Results go to bench/results/lookups.json and to the "Live lookups"
section of docs/benchmarks.md (between markers that `make bench` keeps). Bounded: about 15 s per scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiohttp import web

from bench.common import (
    RESULTS_DIR,
    Children,
    Cores,
    free_port,
    machine_info,
    percentiles,
    python_module,
    rounded,
    scrape_metrics,
    wait_until_ready,
)
from bench.report import LOOKUPS_BEGIN, LOOKUPS_END
from relay.sim.ion import running_ion_simulator
from relay.sim.sxe import SERVICE_PATH, SxeSimulator
from relay.sim.x3 import X3Simulator

REPO = Path(__file__).resolve().parent.parent
DOCS_PATH = REPO / "docs" / "benchmarks.md"
LOOKUP_TOKEN = "bench-lookup-token-0123456789"  # noqa: S105 - a fake token for a throwaway local relay
SXE_WAREHOUSE, X3_SITE = "MAIN", "FR011"
CACHE_RATE_PER_S = 500.0
MAX_DURATION_S = 60.0
_LOOKUP_OPERATIONS = ("sxapiicgetwhseproductdataquantityv3", "sxapiicproductavailbywhse")


@dataclass
class HandlerClock:
    """Wall time of the simulator's availability handler, per call."""

    samples_ms: list[float] = field(default_factory=list)

    def window(self, start: int) -> list[float]:
        return self.samples_ms[start:]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    source: str
    rate_per_s: float
    warehouse: str
    distinct_parts: bool  # True: a new part per lookup (an ERP call each); False: one part (the cache)


def part_number(prefix: str, n: int) -> str:
    """The n-th part of the seeded catalogue (pure)."""
    return f"{prefix}-{n:06d}"


def scheduled_starts(rate_per_s: float, duration_s: float) -> list[float]:
    """Offsets (seconds from the start) of an open-loop run at a fixed rate (pure)."""
    count = int(rate_per_s * duration_s)
    return [n / rate_per_s for n in range(count)]


async def open_loop(
    session: aiohttp.ClientSession,
    url_of: Callable[[int], str],
    rate_per_s: float,
    duration_s: float,
    warmup_s: float,
    on_warm: Callable[[], None],
) -> dict[str, Any]:
    """Start lookup n at `n / rate` whatever earlier answers do; latency counts from the scheduled instant.

    Lookups scheduled in the first `warmup_s` are sent but not counted; `on_warm` is called when the first
    counted one starts.
    """
    headers = {"Authorization": f"Bearer {LOOKUP_TOKEN}"}
    latencies_ms: list[float] = []
    statuses: Counter[str] = Counter()
    origins: Counter[str] = Counter()
    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()

    async def one(n: int, due: float) -> None:
        try:
            async with session.get(url_of(n), headers=headers) as resp:
                body = await resp.read()
                status = str(resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, body = type(exc).__name__, b""
        if due - started < warmup_s:
            return
        latencies_ms.append((time.monotonic() - due) * 1000)
        statuses[status] += 1
        if status == "200":
            answer = orjson.loads(body)
            origins[f"{answer['origin']}{' (stale)' if answer['stale'] else ''}"] += 1

    warm = False
    for n, offset in enumerate(scheduled_starts(rate_per_s, warmup_s + duration_s)):
        due = started + offset
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if not warm and offset >= warmup_s:
            warm = True
            on_warm()
        tasks.append(asyncio.create_task(one(n, due)))
    await asyncio.gather(*tasks)
    late = time.monotonic() - (started + warmup_s + duration_s)
    return {
        "latency_ms": percentiles(latencies_ms),
        "statuses": dict(statuses),
        "origins": dict(origins),
        "drain_s": max(0.0, late),
    }


@contextlib.asynccontextmanager
async def _x3_simulator(clock: HandlerClock) -> AsyncIterator[tuple[X3Simulator, str]]:
    """The X3 simulator with its availability handler timed (a middleware: the app is not started yet)."""
    sim = X3Simulator()

    @web.middleware
    async def timed(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        before = sim.lookup_calls
        t0 = time.perf_counter()
        response = await handler(request)
        if sim.lookup_calls > before:
            clock.samples_ms.append((time.perf_counter() - t0) * 1000)
        return response

    sim.app.middlewares.append(timed)
    runner = web.AppRunner(sim.app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield sim, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _timed_sxe_handler(sxe: SxeSimulator, clock: HandlerClock) -> Callable[..., Awaitable[web.Response]]:
    async def handle(request: web.Request, params: Mapping[str, str] | None = None) -> web.Response:
        t0 = time.perf_counter()
        response = await sxe.handle(request, params)
        if (params or request.match_info).get("operation", "").lower() in _LOOKUP_OPERATIONS:
            clock.samples_ms.append((time.perf_counter() - t0) * 1000)
        return response

    return handle


def relay_config(workdir: Path, port: int, ionapi: Path, x3: X3Simulator, x3_url: str) -> dict[str, Any]:
    lookup = {
        "auth": {"type": "bearer", "tokens": [LOOKUP_TOKEN]},
        "timeout": "2s",
        "cache_ttl": "60s",
        "max_in_flight": 32,
    }
    return {
        "store": {"url": f"sqlite://{workdir / 'relay.db'}"},
        "server": {"listen": f"127.0.0.1:{port}"},
        "logging": {"format": "json", "level": "warning"},
        "sources": [
            {
                "name": "halloran-sxe",
                "kind": "sxe",
                "ionapi_file": str(ionapi),
                "timezone": "America/Chicago",
                "feeds": [{"feed": "icsw", "channel": "inventory/synced", "every": "24h"}],
                "lookup": lookup,
            },
            {
                "name": "aldgate-x3",
                "kind": "x3",
                "base_url": x3_url,
                "folder": "ALDGATE",
                "auth": x3.demo_auth(),
                "resources": [{"class": "ITMMVT", "channel": "inventory/synced", "every": "24h"}],
                "lookup": lookup,
            },
        ],
        "subscribers": [],
    }


async def _until_polled(base_url: str, deadline_s: float) -> None:
    """Wait for the first poll of both sources, so that it does not run during a measurement."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if (await scrape_metrics(base_url)).get("relay_poll_runs_total", 0) >= 2:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the relay did not finish its first polls within {deadline_s:g} s")


async def run(duration_s: float, warmup_s: float, live_rate_per_s: float, cores: Cores) -> dict[str, Any]:
    if cores.client is not None:
        os.sched_setaffinity(0, cores.client)
    parts_needed = int(live_rate_per_s * (duration_s + warmup_s)) + 1
    scenarios = [
        Scenario("cache", "from the cache (SX.e source)", "halloran-sxe", CACHE_RATE_PER_S, SXE_WAREHOUSE, False),
        Scenario("live_sxe", "live from SX.e (ION gateway)", "halloran-sxe", live_rate_per_s, SXE_WAREHOUSE, True),
        Scenario("live_x3", "live from Sage X3 (REST)", "aldgate-x3", live_rate_per_s, X3_SITE, True),
    ]
    clocks = {"halloran-sxe": HandlerClock(), "aldgate-x3": HandlerClock()}
    sxe = SxeSimulator(seed=11)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-lookups-") as tmp:
        workdir = Path(tmp)
        async with (
            running_ion_simulator() as (ion, ion_url),
            _x3_simulator(clocks["aldgate-x3"]) as (x3, x3_url),
            Children() as children,
        ):
            ion.add_gateway_route(SERVICE_PATH + "/{operation}", _timed_sxe_handler(sxe, clocks["halloran-sxe"]))
            sxe.install(ion)  # FetchWhere for the poll; the timed route above comes first
            ionapi = ion.write_ionapi(workdir / "halloran.ionapi", ion_url)
            port = free_port()
            config_path = workdir / "relay.yaml"
            config_path.write_text(yaml.safe_dump(relay_config(workdir, port, ionapi, x3, x3_url), sort_keys=False))
            base_url = f"http://127.0.0.1:{port}"
            relay = await children.spawn(
                "relay",
                python_module("relay.cli", "serve", "-c", str(config_path)),
                cpus=cores.server,
                log_path=workdir / "relay.log",
            )
            await wait_until_ready(relay, base_url)
            await _until_polled(base_url, 30.0)
            # The catalogue is stocked after the first polls, so that no poll runs during the measurements.
            for n in range(parts_needed):
                sxe.set_stock(part_number("SXE", n), SXE_WAREHOUSE, on_hand=100 + n % 50, committed=n % 7)
                x3.set_stock(part_number("X3", n), X3_SITE, on_hand=100 + n % 50, allocated=n % 7)
            sxe.set_stock("CACHED-1", SXE_WAREHOUSE, on_hand=42)
            connector = aiohttp.TCPConnector(limit=512)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
                for sc in scenarios:
                    prefix = "SXE" if sc.source == "halloran-sxe" else "X3"

                    def url_of(n: int, sc: Scenario = sc, prefix: str = prefix) -> str:
                        part = part_number(prefix, n) if sc.distinct_parts else "CACHED-1"
                        return f"{base_url}/v1/sources/{sc.source}/availability?part={part}&warehouse={sc.warehouse}"

                    clock = clocks[sc.source]
                    marks: list[int] = []

                    def erp_calls_so_far(clock: HandlerClock = clock) -> int:
                        return len(clock.samples_ms)

                    def on_warm(marks: list[int] = marks, now: Callable[[], int] = erp_calls_so_far) -> None:
                        marks.append(now())

                    measured = await open_loop(session, url_of, sc.rate_per_s, duration_s, warmup_s, on_warm)
                    mark = marks[0] if marks else 0
                    erp_calls = erp_calls_so_far() - mark
                    results[sc.name] = {
                        "title": sc.title,
                        "rate_per_s": sc.rate_per_s,
                        **measured,
                        "erp_calls": erp_calls,
                        "simulator_handler_ms": percentiles(clock.window(mark)),
                    }
                    sys.stderr.write(f"[bench-lookups] {sc.name}: {rounded(results[sc.name])}\n")
    return results


def render_section(doc: dict[str, Any]) -> str:
    """The "Live lookups" section of docs/benchmarks.md (pure)."""
    machine = doc["machine"]
    settings = doc["settings"]

    def ms(stats: Mapping[str, Any]) -> str:
        if not stats.get("count"):
            return "–"
        return f"{stats['p50']:.1f} / {stats['p95']:.1f} / {stats['p99']:.1f} / {stats['max']:.1f}"

    lines = [
        "## Live lookups",
        "",
        "`GET /v1/sources/{source}/availability?part=…&warehouse=…` against `relay serve`, open loop at a fixed "
        "rate from its own process (latency from each request's scheduled start to its answer), "
        f"{settings['duration_s']:g} s per scenario after {settings['warmup_s']:g} s of warm-up; "
        f"{machine['pinning']}. The ERP simulators run in the load process; their availability handler is timed "
        "in the same run, so a live lookup's latency is the simulator's time plus the relay's. A cached answer "
        "keeps the origin of the ERP call it came from (`live`); the ERP calls column, counted over the same "
        "window, shows how many lookups reached the simulator.",
        "",
        "| lookups | rate | counted | answers (origin) | ERP calls | latency p50 / p95 / p99 / max (ms) "
        "| simulator handler p50 / p99 (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in doc["results"].values():
        handler = result["simulator_handler_ms"]
        answers = ", ".join(f"{n:,} {k}" for k, n in sorted(result["origins"].items())) or "–"
        errors = {k: n for k, n in result["statuses"].items() if k != "200"}
        if errors:
            answers += "; " + ", ".join(f"{n:,} × {k}" for k, n in sorted(errors.items()))
        sim = f"{handler['p50']:.2f} / {handler['p99']:.2f}" if handler.get("count") else "– (no ERP call counted)"
        lines.append(
            f"| {result['title']} | {result['rate_per_s']:g}/s | {result['latency_ms']['count']:,} | {answers} "
            f"| {result['erp_calls']:,} | {ms(result['latency_ms'])} | {sim} |"
        )
    lines += [
        "",
        f"Measured {machine['date']} on {machine['cpu_model']} ({machine['cores']} cores). Reproduce (about "
        f"{len(doc['results']) * (settings['duration_s'] + settings['warmup_s']) + 10:.0f} s):",
        "",
        "```sh",
        f"make bench-lookups        # {doc['command']}",
        "```",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Put `section` between the lookups markers of `path`, replacing what was there or appending it."""
    text = path.read_text() if path.exists() else ""
    block = f"{LOOKUPS_BEGIN}\n{section}\n{LOOKUPS_END}"
    if LOOKUPS_BEGIN in text and LOOKUPS_END in text:
        head, rest = text.split(LOOKUPS_BEGIN, 1)
        text = head + block + rest.split(LOOKUPS_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lookups", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds counted per scenario (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds sent but not counted first (default 2)")
    parser.add_argument("--live-rate", type=float, default=100.0, help="live lookups per second (default 100)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the relay and the load to separate cores")
    parser.add_argument("--docs", type=Path, default=DOCS_PATH, help="the Markdown file to write the section into")
    args = parser.parse_args(argv)
    if not 0 < args.duration + args.warmup <= MAX_DURATION_S:
        parser.error(f"--duration plus --warmup must be more than 0 and at most {MAX_DURATION_S:g} s")
    if args.live_rate <= 0:
        parser.error("--live-rate must be more than 0")
    cores = Cores.choose(pin=not args.no_pin)
    tmp_root = Path(tempfile.gettempdir())
    results = asyncio.run(run(args.duration, args.warmup, args.live_rate, cores))
    doc = {
        "machine": machine_info(tmp_root, cores),
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "live_rate_per_s": args.live_rate},
        "command": " ".join(["python -m bench.lookups", *(argv if argv is not None else sys.argv[1:])]),
        "results": rounded(results, 3),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "lookups.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    write_section(args.docs, render_section(doc))
    sys.stderr.write(f"[bench-lookups] wrote bench/results/lookups.json and {args.docs}\n")
    failed = [name for name, r in results.items() if set(r["statuses"]) - {"200"}]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

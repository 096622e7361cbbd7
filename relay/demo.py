"""`relay demo`: the relay on an embedded SQLite under ./.demo/, simulated sources, two local subscribers.

Everything runs in this one process on 127.0.0.1; nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from rich.console import Console
from rich.table import Table

from relay.daemon import Relay, load_all
from relay.sim.subscriber import DemoSubscriber, ReceivedWebhook

__all__ = ["run_demo"]

HUB_TOKEN = "demo-hub-token"
STOREFRONT_SECRET = "whsec_ZGVtby1zdG9yZWZyb250LXNlY3JldC0wMTIzNDU2Nzg5"
CREDIT_SECRET = "whsec_ZGVtby1jcmVkaXQtYXBwLXNlY3JldC0wMTIzNDU2Nzg5YWI="


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_config(state_dir: Path, port: int, storefront_url: str, credit_url: str) -> dict[str, Any]:
    return {
        "store": {"url": f"sqlite://{(state_dir / 'relay.db').resolve()}"},
        "server": {"listen": f"127.0.0.1:{port}", "drain_grace": "3s"},
        "logging": {"level": "warning", "format": "json"},
        "delivery": {"poll_interval": "200ms"},
        "sources": [{"name": "hub", "kind": "json-push", "auth": {"type": "bearer", "tokens": [HUB_TOKEN]}}],
        "subscribers": [
            {
                "name": "storefront",
                "url": storefront_url,
                "secrets": [STOREFRONT_SECRET],
                "channels": ["inventory/*", "order/*"],
                "ordering": "per-key",
                "allow_private_network": True,
                "timeout": "5s",
                "retry": {"schedule": ["1s", "2s", "5s"], "max_age": "1h"},
            },
            {
                "name": "credit-app",
                "url": credit_url,
                "secrets": [CREDIT_SECRET],
                "channels": ["customer/*", "invoice/*"],
                "allow_private_network": True,
                "timeout": "5s",
                "retry": {"schedule": ["500ms", "1s"], "max_age": "1h"},
            },
        ],
    }


@dataclass
class _Tally:
    pushed: Counter[str] = field(default_factory=Counter)
    answers: Counter[int] = field(default_factory=Counter)


def _sample_events(rng: random.Random, n: int, start: int) -> list[dict[str, Any]]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = []
    for i in range(start, start + n):
        kind = rng.choice(["order", "inventory", "customer", "invoice"])
        base: dict[str, Any] = {"eventId": f"demo-{kind}-{i}", "tenantId": "HALLORAN", "timestamp": now}
        if kind == "order":
            base |= {
                "documentType": "SyncSalesOrder",
                "data": {
                    "orderNumber": f"SO-{1000 + i % 17}",
                    "customerNumber": f"C{200 + i % 5}",
                    "orderDate": now[:10],
                    "orderStatus": "Open",
                    "totalAmount": round(rng.uniform(50, 900), 2),
                    "currency": "USD",
                    "lineCount": rng.randint(1, 6),
                },
            }
        elif kind == "inventory":
            base |= {
                "documentType": "SyncInventory",
                "data": {
                    "partNumber": f"BRK-{20 + i % 9}",
                    "warehouse": rng.choice(["MAIN", "EAST", "WEST"]),
                    "onHand": rng.randint(0, 400),
                    "allocated": rng.randint(0, 40),
                    "available": rng.randint(0, 360),
                    "unitOfMeasure": "EA",
                    "lastTransactionDate": now,
                },
            }
        elif kind == "customer":
            base |= {
                "documentType": "SyncCustomerPartyMaster",
                "data": {
                    "customerNumber": f"C{200 + i % 5}",
                    "customerName": "Brightline Contractors",
                    "status": "Active",
                    "currency": "USD",
                    "country": "US",
                    "lastModified": now,
                },
            }
        else:
            base |= {
                "documentType": "SyncInvoice",
                "data": {
                    "invoiceNumber": f"INV-{5000 + i}",
                    "customerNumber": f"C{200 + i % 5}",
                    "invoiceDate": now[:10],
                    "amount": round(rng.uniform(50, 900), 2),
                    "currency": "USD",
                    "status": "Open",
                },
            }
        out.append(base)
    return out


async def _push(session: aiohttp.ClientSession, url: str, event: Any, tally: _Tally) -> int:
    async with session.post(
        url,
        data=orjson.dumps(event),
        headers={"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"},
    ) as r:
        await r.read()
        tally.answers[r.status] += 1
        return r.status


def _summary(subs: list[DemoSubscriber], tally: _Tally) -> Table:
    table = Table(title="erp-relay demo")
    table.add_column("subscriber")
    table.add_column("received")
    table.add_column("verified")
    table.add_column("distinct events")
    table.add_column("retries")
    table.add_column("replays")
    for s in subs:
        table.add_row(
            s.name,
            str(len(s.received)),
            str(sum(1 for r in s.received if r.verified)),
            str(len(s.seen_ids)),
            str(sum(1 for r in s.received if r.attempt > 1)),
            str(sum(1 for r in s.received if r.replay)),
        )
    return table


async def run_demo(duration_s: float | None, state_dir: Path = Path(".demo"), rate_per_s: float = 20.0) -> int:
    """Run the demo for `duration_s` seconds (None: until Ctrl-C); returns the exit code."""
    console = Console()
    await asyncio.to_thread(state_dir.mkdir, parents=True, exist_ok=True)
    storefront = DemoSubscriber("storefront", STOREFRONT_SECRET)
    credit = DemoSubscriber("credit-app", CREDIT_SECRET, failure_rate=0.15, seed=3)

    def show(sub: DemoSubscriber, item: ReceivedWebhook) -> None:
        mark = "✓" if item.verified and item.status < 300 else ("retry" if item.status == 503 else "✗")
        flags = " replay" if item.replay else ""
        console.print(
            f"  [dim]{sub.name:>11}[/dim] ← {item.channel:<17} {item.event_id:<24} attempt {item.attempt}"
            f" signature {'verified' if item.verified else 'INVALID'} → {item.status} {mark}{flags}",
            highlight=False,
        )

    storefront.on_receive = show
    credit.on_receive = show
    await storefront.start()
    await credit.start()
    port = _free_port()
    config_path = state_dir / "relay.yaml"
    config_path.write_text(yaml.safe_dump(demo_config(state_dir, port, storefront.url, credit.url), sort_keys=False))
    config, specs = load_all(config_path)
    relay = Relay(config_path, config, specs)
    await relay.start()
    console.print(f"[bold]erp-relay demo[/bold]: relay on http://127.0.0.1:{port}, store {state_dir / 'relay.db'}")
    console.print(
        "  sources: hub (JSON push); subscribers: storefront (orders, inventory), credit-app (customers, "
        "invoices; fails now and then)"
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tally = _Tally()
    rng = random.Random(42)
    url = f"http://127.0.0.1:{port}/v1/sources/hub/events"
    started = time.monotonic()
    code = 0
    try:
        async with aiohttp.ClientSession() as session:
            first = _sample_events(rng, 8, 0)
            for event in first:
                status = await _push(session, url, event, tally)
                console.print(f"  push {event['documentType']:<24} {event['eventId']:<24} → {status}", highlight=False)
            status = await _push(session, url, first[0], tally)
            console.print(f"  push the same event again ({first[0]['eventId']}) → {status} duplicate", highlight=False)
            bad = {
                "eventId": "demo-bad-1",
                "documentType": "SyncSalesOrder",
                "timestamp": first[0]["timestamp"],
                "data": {"orderNumber": 42},
            }
            status = await _push(session, url, bad, tally)
            console.print(
                f"  push an invalid event (orderNumber is a number) → {status}, kept in quarantine", highlight=False
            )
            i = len(first)
            while not stop.is_set() and (duration_s is None or time.monotonic() - started < duration_s):
                for event in _sample_events(rng, 1, i):
                    await _push(session, url, event, tally)
                i += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1 / rate_per_s)
        # Let retries finish before the summary.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = await relay.store.subscriber_states() if relay.store else {}
            if all(st.pending == 0 for st in states.values()):
                break
            await asyncio.sleep(0.2)
    finally:
        await relay.stop()
        await storefront.stop()
        await credit.stop()
    console.print(_summary([storefront, credit], tally))
    console.print(f"ingest answers: {dict(sorted(tally.answers.items()))}")
    if not all(r.verified for s in (storefront, credit) for r in s.received):
        console.print("[red]some signatures did not verify[/red]")
        code = 1
    return code

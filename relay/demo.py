"""`relay demo`: the relay on an embedded SQLite under ./.demo/, two simulated ERPs, two local subscribers.

Halloran Electrical Supply (Infor SX.e with ION) pushes sales orders, customers and invoices through IMS
and has its warehouse stock and purchase orders read from SX.e tables (FetchWhere); Aldgate Packaging
(Sage X3) has its customers, stock per site, purchase orders and goods receipts polled. A storefront takes
inventory, orders, purchase orders and receipts; a credit-management app takes customers and invoices, fails
now and then, and refuses one account until the demo "fixes" it and redrives the dead letter. Everything runs
in this process on 127.0.0.1; nothing leaves the machine.

The storefront also looks stock up live (`GET /v1/sources/halloran-sxe/availability`), and a scripted run of
one part's stock in SX.e crosses the low-stock threshold of the demo's `rules:` entry and back, so the
storefront receives a low-stock alert and then a stock-restored one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from rich.console import Console
from rich.table import Table

from relay.daemon import Relay, load_all
from relay.sim.ion import BodFactory, make_ims_message, push_bods, running_ion_simulator
from relay.sim.subscriber import DemoSubscriber, ReceivedWebhook
from relay.sim.sxe import SxeSimulator
from relay.sim.x3 import X3Simulator, running_x3_simulator
from relay.store.base import DeliveryFilter

__all__ = ["run_demo"]

ION_USER, ION_PASSWORD = "ion", "demo-ion-gateway-password"
QUOTES_TOKEN = "demo-quoting-platform-token-0123456789"
STOREFRONT_SECRET = "whsec_ZGVtby1zdG9yZWZyb250LXNlY3JldC0wMTIzNDU2Nzg5"
CREDIT_SECRET = "whsec_ZGVtby1jcmVkaXQtYXBwLXNlY3JldC0wMTIzNDU2Nzg5YWI="
ITEM_BALANCE, PURCHASE_ORDERS = "icsw", "poeh"
LOOKUP_TOKEN = "demo-storefront-lookup-token-0123456789"
SOURCE_ERP = {
    "halloran-ion": "Halloran (Infor)",
    "halloran-sxe": "Halloran (Infor)",
    "aldgate-x3": "Aldgate (Sage X3)",
    "rule:low-stock": "the relay's rule",
}
LOW_STOCK_RULE = {
    "name": "low-stock",
    "on": "inventory/synced",
    "when": "data.available <= 10",
    "clear_when": "data.available > 20",
    "emit": "inventory/low-stock",
    "emit_clear": "inventory/stock-restored",
}
ALERT_CHANNELS = ("inventory/low-stock", "inventory/stock-restored")
# One part whose SX.e stock the demo scripts: (seconds into a 20 s run, on-hand quantity). Orders draw it down
# past the rule's threshold (10 available) and a delivery restocks it past the restore level (20).
SCRIPTED_PART, SCRIPTED_WAREHOUSE = "BRK-20A", "MAIN"
STOCK_SCRIPT_S = ((0.0, 40), (3.0, 18), (6.0, 7), (12.0, 60))
# When the storefront looks the part up live: before and after the stock falls below the threshold.
LOOKUPS_AT_S = (1.5, 8.5)
SCRIPT_LENGTH_S = 20.0


def scripted_stock(elapsed_s: float, time_scale: float) -> int:
    """The scripted part's on-hand quantity `elapsed_s` into the demo (pure); times stretch by `time_scale`."""
    level = STOCK_SCRIPT_S[0][1]
    for at_s, on_hand in STOCK_SCRIPT_S:
        if elapsed_s >= at_s * time_scale:
            level = on_hand
    return level


def script_time_scale(duration_s: float | None) -> float:
    """How much the script's times shrink so that a short demo still runs all of it (pure)."""
    return 1.0 if duration_s is None else min(1.0, duration_s / SCRIPT_LENGTH_S)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def _x3_simulator(seed: int) -> AsyncIterator[tuple[X3Simulator, str]]:
    async with running_x3_simulator(seed=seed) as (sim, base_url):
        yield sim, base_url


def demo_config(
    state_dir: Path, port: int, storefront_url: str, credit_url: str, x3: tuple[X3Simulator, str] | None
) -> dict[str, Any]:
    sources: list[dict[str, Any]] = [
        {"name": "halloran-ion", "kind": "ion-ims", "tenant_id": "HALLORAN",
         "auth": {"type": "basic", "username": ION_USER, "password": ION_PASSWORD}},
        {"name": "halloran-sxe", "kind": "sxe", "ionapi_file": str((state_dir / "halloran.ionapi").resolve()),
         "timezone": "America/Chicago",
         "lookup": {"auth": {"type": "bearer", "tokens": [LOOKUP_TOKEN]}, "timeout": "2s", "cache_ttl": "5s"},
         "feeds": [{"feed": "icsw", "channel": "inventory/synced", "every": "2s", "record_limit": 100},
                   {"feed": "poeh", "channel": "purchaseorder/synced", "every": "2s", "record_limit": 100}]},
    ]  # fmt: skip
    if x3 is not None:
        sim, base_url = x3
        sources.append(
            {"name": "aldgate-x3", "kind": "x3", "base_url": base_url, "folder": "ALDGATE",
             "auth": sim.demo_auth(),
             "commands": {"auth": {"type": "bearer", "tokens": [QUOTES_TOKEN]}, "allow": ["order/create"],
                          "max_in_flight": 2, "rate_limit": "5/s"},
             "resources": [
                 {"class": "BPCUSTOMER", "channel": "customer/synced", "every": "2s", "page_size": 50},
                 {"class": "ITMMVT", "channel": "inventory/synced", "every": "3s", "page_size": 50},
                 {"class": "PORDER", "channel": "purchaseorder/synced", "every": "3s", "page_size": 50},
                 {"class": "PRECEIPT", "channel": "receipt/synced", "every": "3s", "page_size": 50},
             ]}
        )  # fmt: skip
    return {
        "store": {"url": f"sqlite://{(state_dir / 'relay.db').resolve()}"},
        "server": {"listen": f"127.0.0.1:{port}", "drain_grace": "3s"},
        "logging": {"level": "warning", "format": "json"},
        "delivery": {"poll_interval": "200ms"},
        "sources": sources,
        "rules": [LOW_STOCK_RULE],
        "subscribers": [
            {"name": "storefront", "url": storefront_url, "secrets": [STOREFRONT_SECRET],
             "channels": ["inventory/*", "order/*", "purchaseorder/*", "receipt/*"], "ordering": "per-key",
             "allow_private_network": True,
             "timeout": "5s", "retry": {"schedule": ["1s", "2s", "5s"], "max_age": "1h"}},
            {"name": "credit-app", "url": credit_url, "secrets": [CREDIT_SECRET],
             "channels": ["customer/*", "invoice/*"], "allow_private_network": True, "timeout": "5s",
             "retry": {"schedule": ["300ms", "600ms"], "max_age": "1h"}},
        ],
    }  # fmt: skip


class _View:
    """Line-by-line output of what happens, with a summary at the end."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.by_source: Counter[tuple[str, str]] = Counter()
        self.verified: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.redriven = 0

    def received(self, sub: DemoSubscriber, item: ReceivedWebhook) -> None:
        ok = item.verified and item.status < 300
        if ok:
            self.by_source[(sub.name, item.source)] += 1
            self.verified[sub.name] += 1
        if item.attempt > 1:
            self.retries[sub.name] += 1
        mark = "delivered" if ok else ("will retry" if item.status >= 500 else "REFUSED")
        self.console.print(
            f"  {sub.name:>11} ← {item.source:<14} {item.channel:<24} {item.event_id[:22]:<22} "
            f"#{item.attempt}{' replay' if item.replay else ''} signature {'ok' if item.verified else 'BAD'} "
            f"→ {item.status} {mark}",
            highlight=False,
        )
        if ok and item.channel in ALERT_CHANNELS and item.attempt == 1:
            self._alert(sub, item)

    def _alert(self, sub: DemoSubscriber, item: ReceivedWebhook) -> None:
        try:
            data = orjson.loads(item.body)["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return  # not the JSON message the relay sends: the line above already shows it arrived
        low = item.channel == "inventory/low-stock"
        available = data.get("available")
        self.console.print(
            f"  [bold {'red' if low else 'green'}]{'low-stock alert' if low else 'stock restored'}[/] at "
            f"{sub.name}: {data.get('key')} available "
            f"{f'{available:g}' if isinstance(available, int | float) else available} "
            f"({data.get('threshold')}, rule {data.get('rule')})",
            highlight=False,
        )

    def table(self, subs: list[DemoSubscriber]) -> Table:
        table = Table(title="erp-relay demo: what the subscribers received")
        for column in ("subscriber", "from", "events delivered (signature verified)"):
            table.add_column(column)
        for sub in subs:
            for (name, source), count in sorted(self.by_source.items()):
                if name == sub.name:
                    table.add_row(sub.name, f"{SOURCE_ERP.get(source, source)} · {source}", str(count))
        return table


async def _ion_traffic(url: str, session: aiohttp.ClientSession, factory: BodFactory, rng: random.Random) -> int:
    kind = rng.choice(["sales_order", "sales_order", "customer_sync", "invoice"])
    bod = factory.next_bod(kind)  # type: ignore[arg-type]
    message = make_ims_message(bod, encoding="DEFLATE" if rng.random() < 0.3 else "NONE")
    (result,) = await push_bods(url, [message], session=session, auth=(ION_USER, ION_PASSWORD))
    return result.status


async def _quote_to_order(
    relay: Relay, port: int, session: aiohttp.ClientSession, console: Console, storefront: DemoSubscriber
) -> None:
    """A quoting platform's buyer accepts a quote: the relay creates the sales order in Aldgate's X3."""
    quote = {
        "customerNumber": "C00001",
        "customerReference": "QUOTE-2026-0042",
        "orderDate": "2026-12-02",
        "currency": "GBP",
        "site": "ALD01",
        "lines": [{"partNumber": "BOX-M-KRAFT", "quantity": 400, "unitPrice": 0.61},
                  {"partNumber": "TAPE-48-CLR", "quantity": 36}],
    }  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/sources/aldgate-x3/commands/order/create"
    headers = {"Authorization": f"Bearer {QUOTES_TOKEN}", "Idempotency-Key": "quote-2026-0042-accepted"}
    async with session.post(url, json=quote, headers=headers) as resp:
        accepted = await resp.json()
    console.print(
        f"  quote {quote['customerReference']} accepted → POST …/aldgate-x3/commands/order/create → "
        f"{resp.status} {accepted.get('status')} {accepted.get('commandId')}"
    )
    for _ in range(100):
        row = await relay.store.get_command(accepted["commandId"]) if relay.store is not None else None
        if row is not None and row.status in ("succeeded", "failed"):
            number = (row.result or {}).get("documentNumber")
            console.print(
                f"  quote {quote['customerReference']} became X3 order {number} ({row.status}, {row.attempts} attempt)"
                if row.status == "succeeded"
                else f"  [red]quote {quote['customerReference']} failed: {row.error}[/red]"
            )
            break
        await asyncio.sleep(0.1)
    else:
        console.print("  [red]the quote's order was not created in time[/red]")
        return
    for _ in range(100):
        for item in storefront.received:
            if item.channel == "order/created" and item.verified and item.status < 300:
                data = orjson.loads(item.body).get("data", {})
                console.print(
                    f"  storefront received order/created: X3 order {data.get('orderNumber')} for quote "
                    f"{data.get('customerReference')} (signature verified)"
                )
                return
        await asyncio.sleep(0.1)
    console.print("  [red]the order number did not reach the storefront in time[/red]")


async def _look_up(base_url: str, session: aiohttp.ClientSession, console: Console) -> None:
    """What the storefront does when a buyer searches: ask the relay for live stock and print the answer."""
    path = f"/v1/sources/halloran-sxe/availability?part={SCRIPTED_PART}&warehouse={SCRIPTED_WAREHOUSE}"
    started = time.perf_counter()
    async with session.get(base_url + path, headers={"Authorization": f"Bearer {LOOKUP_TOKEN}"}) as resp:
        body = await resp.read()
    took_ms = (time.perf_counter() - started) * 1000
    console.print(f"  storefront → GET {path}", highlight=False)
    if resp.status != 200:
        console.print(f"    {resp.status}: {body[:200].decode(errors='replace')}", highlight=False)
        return
    answer = orjson.loads(body)
    for w in answer["warehouses"]:
        console.print(
            f"    {resp.status} {answer['origin']}{' (stale)' if answer['stale'] else ''}: {w['warehouse']} "
            f"on hand {w['onHand']:g}, allocated {w['allocated']:g}, available {w['available']:g} "
            f"in {took_ms:.1f} ms",
            highlight=False,
        )


async def run_demo(duration_s: float | None, state_dir: Path = Path(".demo")) -> int:
    """Run the demo for `duration_s` seconds (None: until Ctrl-C); returns the exit code."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=140)  # logs and CI: no wrapping at 80 columns
    await asyncio.to_thread(_fresh_state_dir, state_dir)
    view = _View(console)
    storefront = DemoSubscriber("storefront", STOREFRONT_SECRET, on_receive=view.received)
    credit = DemoSubscriber("credit-app", CREDIT_SECRET, failure_rate=0.1, seed=3, on_receive=view.received)
    refused_key: dict[str, str | None] = {"customer": None}
    credit.refuse = lambda body: refused_key["customer"] is not None and refused_key["customer"].encode() in body
    sxe = SxeSimulator(seed=5)
    sxe.seed_rows(ITEM_BALANCE, 24)
    sxe.seed_rows(PURCHASE_ORDERS, 3)
    time_scale = script_time_scale(duration_s)
    stock = scripted_stock(0.0, time_scale)
    sxe.set_stock(SCRIPTED_PART, SCRIPTED_WAREHOUSE, on_hand=stock)
    rng = random.Random(42)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await storefront.start()
    await credit.start()
    code = 0
    async with running_ion_simulator() as (ion, ion_url), _x3_simulator(seed=9) as x3:
        sxe.install(ion)
        ion.write_ionapi(state_dir / "halloran.ionapi", ion_url)
        port = _free_port()
        config_path = state_dir / "relay.yaml"
        config_path.write_text(
            yaml.safe_dump(demo_config(state_dir, port, storefront.url, credit.url, x3), sort_keys=False)
        )
        config, specs = load_all(config_path)
        relay = Relay(config_path, config, specs)
        await relay.start()
        console.print(f"[bold]erp-relay demo[/bold] — relay on http://127.0.0.1:{port}, store {state_dir}/relay.db")
        console.print("  Halloran Electrical Supply (Infor ION + SX.e) pushes orders, customers, invoices (IMS);")
        console.print("  its stock by warehouse and purchase orders are read from SX.e; Aldgate (Sage X3) is polled.")
        console.print("  a quoting platform creates sales orders in Aldgate's X3 through the relay (write-back);")
        console.print("  storefront ← inventory, orders (and the X3 order numbers), purchase orders, receipts")
        console.print("  credit-app ← customers, invoices (fails now and then)")
        console.print(
            f"  rule low-stock: {LOW_STOCK_RULE['when']} raises an alert, {LOW_STOCK_RULE['clear_when']} clears it;"
            f" {SCRIPTED_PART} in {SCRIPTED_WAREHOUSE} starts at {stock}\n"
        )
        factory = BodFactory(seed=4)
        ims_url = f"http://127.0.0.1:{port}/ion/halloran-ion"
        started = time.monotonic()
        phase = "running"
        try:
            async with aiohttp.ClientSession() as session:
                # One customer is refused by the credit app until the demo "fixes" it: a dead letter.
                customer = factory.customer_sync()
                refused_key["customer"] = customer.document_id
                await push_bods(ims_url, [make_ims_message(customer)], session=session, auth=(ION_USER, ION_PASSWORD))
                console.print(f"  credit-app refuses customer {customer.document_id} for now (credit hold)")
                await _quote_to_order(relay, port, session, console, storefront)
                tick = 0
                lookups_due = [at_s * time_scale for at_s in LOOKUPS_AT_S]
                while not stop.is_set() and (duration_s is None or time.monotonic() - started < duration_s):
                    await _ion_traffic(ims_url, session, factory, rng)
                    tick += 1
                    elapsed_s = time.monotonic() - started
                    if scripted_stock(elapsed_s, time_scale) != stock:
                        stock = scripted_stock(elapsed_s, time_scale)
                        sxe.set_stock(SCRIPTED_PART, SCRIPTED_WAREHOUSE, on_hand=stock)
                        console.print(f"  SX.e: {SCRIPTED_PART} on hand in {SCRIPTED_WAREHOUSE} is now {stock}")
                    if lookups_due and elapsed_s >= lookups_due[0]:
                        lookups_due.pop(0)
                        await _look_up(f"http://127.0.0.1:{port}", session, console)
                    if tick % 5 == 0:
                        changed = sxe.change(ITEM_BALANCE, 2)
                        if any(r["prod"] == SCRIPTED_PART and r["whse"] == SCRIPTED_WAREHOUSE for r in changed):
                            # The scripted part keeps its script; the poll has not seen the random change yet.
                            sxe.set_stock(SCRIPTED_PART, SCRIPTED_WAREHOUSE, on_hand=stock)
                        sxe.change(PURCHASE_ORDERS, 1)
                        x3[0].change("BPCUSTOMER", 1)
                        x3[0].change("ITMMVT", 2)
                        x3[0].change("PORDER", 1)
                    if phase == "running" and relay.store is not None:
                        dead = await relay.store.list_deliveries(DeliveryFilter(state="dead", subscriber="credit-app"))
                        if dead:
                            refused_key["customer"] = None
                            count = await relay.store.redrive(DeliveryFilter(subscriber="credit-app"))
                            view.redriven += count
                            console.print(
                                f"  [yellow]dead letter[/yellow] {dead[0].event_id[:22]} → credit-app "
                                f"({dead[0].last_error}); the account is fixed: redriving {count} dead "
                                f"deliver{'y' if count == 1 else 'ies'}"
                            )
                            phase = "redriven"
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=0.25)
            await _settle(relay, console)
        finally:
            await relay.stop()
            await storefront.stop()
            await credit.stop()
    console.print()
    console.print(view.table([storefront, credit]))
    retries = sum(view.retries.values())
    console.print(f"retries: {retries}; dead letters redriven: {view.redriven}")
    if not all(r.verified for s in (storefront, credit) for r in s.received):
        console.print("[red]some signatures did not verify[/red]")
        code = 1
    return code


def _fresh_state_dir(state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    for old in state_dir.glob("relay.db*"):  # every run starts from an empty store
        old.unlink()


async def _settle(relay: Relay, console: Console, timeout_s: float = 10.0) -> None:
    """Let pending deliveries and retries finish before the summary."""
    deadline = time.monotonic() + timeout_s
    while relay.store is not None and time.monotonic() < deadline:
        states = await relay.store.subscriber_states()
        if all(st.pending == 0 for st in states.values()):
            return
        await asyncio.sleep(0.2)
    console.print("  (some deliveries still pending at the end of the demo)")

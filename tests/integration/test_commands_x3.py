"""Write-back to Sage X3 against the real app, a real SQLite file (or PostgreSQL database), the X3 simulator and
a subscriber that verifies Standard Webhooks signatures: orders created once, numbers delivered, refusals,
idempotency, limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import Stack, start_stack, stop_stack
from helpers import ainvoke_cli, base_config, until, write_config
from subscriber import Subscriber, subscriber_config

from relay.commands.executor import CommandExecutor
from relay.sim.x3 import X3Simulator, running_x3_simulator

QUOTES_TOKEN = "quotes-token-0123456789"
JITTER_S = 0.05  # how late a request may reach the simulator after the relay started it
AUTH = {"Authorization": f"Bearer {QUOTES_TOKEN}", "Content-Type": "application/json"}
ORDER_PATH = "/v1/sources/aldgate-x3/commands/order/create"


class WriteBack(Stack):
    executor: CommandExecutor
    sim: X3Simulator
    subscriber: Subscriber


def x3_source(url: str, sim: X3Simulator, *, timeout: str = "1s", **commands: Any) -> dict[str, Any]:
    return {
        "name": "aldgate-x3",
        "kind": "x3",
        "base_url": url,
        "folder": "ALDGATE",
        "auth": sim.demo_auth(),
        "timeout": timeout,
        "commands": {
            "auth": {"type": "bearer", "tokens": [QUOTES_TOKEN]},
            "retry": {"schedule": ["50ms", "100ms", "200ms"], "max_age": "1h"},
            "lease": "5s",
            **commands,
        },
    }


async def start(
    tmp_path: Path,
    sim: X3Simulator,
    url: str,
    *,
    store_url: str | None = None,
    timeout: str = "1s",
    **commands: Any,
) -> WriteBack:
    subscriber = Subscriber()
    hook = await subscriber.start()
    data = base_config(
        tmp_path,
        store={"url": store_url or f"sqlite://{tmp_path / 'relay.db'}"},
        sources=[x3_source(url, sim, timeout=timeout, **commands)],
        subscribers=[subscriber_config("quotes", hook, channels=["order/created", "command/failed", "customer/*"])],
    )
    stack = await start_stack(tmp_path, data)
    wb = WriteBack(stack.runtime, stack.client)
    wb.dispatcher = stack.dispatcher
    wb.executor = CommandExecutor(stack.runtime, poll_interval_s=0.05)
    await wb.executor.start()
    wb.sim, wb.subscriber = sim, subscriber
    return wb


async def stop(wb: WriteBack) -> None:
    await wb.executor.stop(1.0)
    await stop_stack(wb)
    await wb.subscriber.stop()


@pytest.fixture
async def x3() -> AsyncIterator[tuple[X3Simulator, str]]:
    async with running_x3_simulator() as (sim, url):
        sim.hang_s = 3.0  # longer than the source's 1s timeout
        yield sim, url


def order(reference: str = "Q-1001", customer: str = "C00001", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customerNumber": customer,
        "customerReference": reference,
        "orderDate": "2026-12-02",
        "currency": "GBP",
        "site": "ALD01",
        "lines": [
            {"partNumber": "BOX-S-KRAFT", "quantity": 120, "unitPrice": 0.42, "unitOfMeasure": "UN"},
            {"partNumber": "TAPE-48-CLR", "quantity": 24},
        ],
    }
    body.update(over)
    return body


async def post(wb: Stack, body: Any, key: str, path: str = ORDER_PATH, **headers: str) -> tuple[int, dict[str, Any]]:
    async with wb.client.post(path, data=orjson.dumps(body), headers={**AUTH, "Idempotency-Key": key, **headers}) as r:
        return r.status, orjson.loads(await r.read() or b"{}")


async def status_of(wb: Stack, command_id: str, token: str = QUOTES_TOKEN) -> dict[str, Any]:
    async with wb.client.get(f"/v1/commands/{command_id}", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        return dict(orjson.loads(await r.read()))


async def finished(wb: Stack, command_id: str, timeout: float = 10.0) -> dict[str, Any]:
    async def done() -> bool:
        return (await status_of(wb, command_id))["status"] in ("succeeded", "failed")

    await until(done, timeout=timeout)
    return await status_of(wb, command_id)


async def command_counts(wb: Stack) -> dict[str, float]:
    """`relay_commands_total` of aldgate-x3 order/create by outcome, as /metrics shows it."""
    async with wb.client.get("/metrics") as r:
        text = await r.text()
    prefix = 'relay_commands_total{command="order/create",outcome="'
    counts = {}
    for line in text.splitlines():
        if line.startswith(prefix) and 'source="aldgate-x3"' in line:
            counts[line[len(prefix) :].split('"', 1)[0]] = float(line.rsplit(" ", 1)[1])
    return counts


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_accepted_quote_becomes_one_x3_order_and_its_number_reaches_the_subscriber(
    tmp_path: Path, x3: tuple[X3Simulator, str], backend: str, request: pytest.FixtureRequest
) -> None:
    sim, url = x3
    store_url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    wb = await start(tmp_path, sim, url, store_url=store_url)
    assert wb.runtime.store.dialect == backend
    try:
        before = await command_counts(wb)
        status, body = await post(wb, order(), "quote-1001-accepted")
        assert status == 202
        assert body["status"] == "accepted"
        doc = await finished(wb, body["commandId"])
        assert doc["status"] == "succeeded"
        assert doc["attempts"] == 1
        number = doc["result"]["documentNumber"]
        (created,) = sim.orders
        assert created["SOHNUM"] == number
        assert created["CUSORDREF"] == "Q-1001"
        assert created["BPCORD"] == "C00001"
        assert [(line["ITMREF"], line["QTY"]) for line in created["SOHSOP"]] == [
            ("BOX-S-KRAFT", 120),
            ("TAPE-48-CLR", 24),
        ]
        await until(lambda: wb.subscriber.delivered, timeout=10)
        (webhook,) = wb.subscriber.delivered
        assert webhook.verified
        assert webhook.headers["relay-channel"] == "order/created"
        data = webhook.payload["data"]
        assert (data["orderNumber"], data["commandId"], data["customerReference"]) == (
            number,
            body["commandId"],
            "Q-1001",
        )
        # The same key and body again: the status document, and no second order.
        status, again = await post(wb, order(), "quote-1001-accepted")
        assert (status, again["commandId"], again["status"]) == (200, body["commandId"], "succeeded")
        assert len(sim.orders) == 1
        after = await command_counts(wb)
        changed = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
        assert changed == {"accepted": 1, "succeeded": 1, "replayed": 1}
    finally:
        await stop(wb)


async def test_fifty_concurrent_requests_with_one_key_make_one_order_and_a_new_body_is_409(
    tmp_path: Path, x3: tuple[X3Simulator, str]
) -> None:
    sim, url = x3
    wb = await start(tmp_path, sim, url)
    try:
        results = await asyncio.gather(*(post(wb, order("Q-7"), "same-key") for _ in range(50)))
        statuses = sorted(s for s, _ in results)
        assert statuses.count(202) == 1
        assert statuses.count(200) == 49
        assert len({b["commandId"] for _, b in results}) == 1
        await finished(wb, results[0][1]["commandId"])
        assert len(sim.orders) == 1
        status, body = await post(wb, order("Q-7", lines=[{"partNumber": "PALLET-EUR", "quantity": 1}]), "same-key")
        assert (status, body["error"]) == (409, "idempotency_key_reused")
        assert len(sim.orders) == 1
    finally:
        await stop(wb)


async def test_unknown_item_fails_at_once_with_x3s_message_and_a_command_failed_event(
    tmp_path: Path, x3: tuple[X3Simulator, str]
) -> None:
    sim, url = x3
    wb = await start(tmp_path, sim, url)
    try:
        body = order("Q-9", lines=[{"partNumber": "NO-SUCH-ITEM", "quantity": 3}])
        status, accepted = await post(wb, body, "q9")
        assert status == 202
        doc = await finished(wb, accepted["commandId"])
        assert doc["status"] == "failed"
        assert doc["attempts"] == 1
        assert doc["error"]["code"] == "erp_refused"
        assert doc["error"]["erpMessages"] == ["Line 1: ITMREF: Record does not exist (NO-SUCH-ITEM) [Products]"]
        assert sim.orders == []
        await until(lambda: wb.subscriber.delivered, timeout=10)
        (webhook,) = wb.subscriber.delivered
        assert webhook.headers["relay-channel"] == "command/failed"
        assert webhook.payload["data"]["error"]["erpMessages"] == doc["error"]["erpMessages"]
        assert webhook.verified
    finally:
        await stop(wb)


@pytest.mark.parametrize("mode", ["timeout", "drop"])
async def test_an_order_created_before_a_timeout_or_a_dropped_connection_is_adopted_not_created_again(
    tmp_path: Path, x3: tuple[X3Simulator, str], mode: str
) -> None:
    sim, url = x3
    sim.fail_after_create(mode)
    wb = await start(tmp_path, sim, url)
    try:
        status, accepted = await post(wb, order("Q-55"), "q55")
        assert status == 202
        doc = await finished(wb, accepted["commandId"])
        assert doc["status"] == "succeeded"
        assert doc["attempts"] == 2
        assert doc["result"]["adopted"] is True
        (created,) = sim.orders
        assert doc["result"]["documentNumber"] == created["SOHNUM"]
        await until(lambda: wb.subscriber.delivered, timeout=10)
        assert wb.subscriber.delivered[0].payload["data"]["adopted"] is True
    finally:
        await stop(wb)


async def test_max_in_flight_one_and_the_rate_limit_hold_at_the_simulator(
    tmp_path: Path, x3: tuple[X3Simulator, str]
) -> None:
    sim, url = x3
    sim.create_delay_s = 0.05
    wb = await start(tmp_path, sim, url, max_in_flight=1, rate_limit="10/s")
    try:
        ids = []
        for n in range(8):
            # Different customers: nothing but max_in_flight and rate_limit holds them back.
            _, body = await post(wb, order(f"Q-R{n}", customer=f"C{n:05d}"), f"rate-{n}")
            ids.append(body["commandId"])
        for command_id in ids:
            assert (await finished(wb, command_id))["status"] == "succeeded"
        assert sim.max_creates_in_flight == 1
        # 10/s: the relay starts calls 100 ms apart; the simulator sees each start late by the time the request takes
        # to get there (the first also opens the connection), up to JITTER_S on a busy machine. So any k calls span
        # at least (k - 1) × 100 ms less that jitter — 650 ms for all 8, where max_in_flight alone gives ~400 ms.
        starts = sim.create_starts_mono
        assert len(starts) == 8
        spans = [(j - i, starts[j] - starts[i]) for i in range(len(starts)) for j in range(i + 1, len(starts))]
        too_close = [(calls, round(span_s, 3)) for calls, span_s in spans if span_s < calls * 0.1 - JITTER_S]
        assert not too_close, too_close
    finally:
        await stop(wb)


@pytest.mark.parametrize("backend", ["sqlite", "postgres-2-executors"])
async def test_a_create_longer_than_the_lease_is_sent_once(
    tmp_path: Path, x3: tuple[X3Simulator, str], backend: str, request: pytest.FixtureRequest
) -> None:
    # The lease is renewed while the create is in flight: neither this executor nor another one on the same
    # database takes the command over, looks the order up (not there yet) and creates it a second time.
    sim, url = x3
    sim.create_delay_s = 2.2  # the ERP takes two leases and more: what is under test, not a synchronisation
    store_url = request.getfixturevalue("postgres_url") if backend.startswith("postgres") else None
    wb = await start(tmp_path, sim, url, store_url=store_url, timeout="10s", lease="1s")
    other = CommandExecutor(wb.runtime, poll_interval_s=0.05) if store_url else None
    try:
        if other is not None:
            await other.start()
        status, body = await post(wb, order("Q-SLOW"), "slow-create")
        assert status == 202
        doc = await finished(wb, body["commandId"], timeout=15)
        assert (doc["status"], doc["attempts"]) == ("succeeded", 1)
        assert "adopted" not in doc["result"]  # created by its one attempt, not found by a second one
        assert len(sim.create_starts_mono) == 1, f"created {len(sim.create_starts_mono)} times"
        assert [o["CUSORDREF"] for o in sim.orders] == ["Q-SLOW"]
    finally:
        if other is not None:
            await other.stop(1.0)
        await stop(wb)


async def test_a_command_whose_lease_was_taken_over_is_not_sent_by_its_old_holder(
    tmp_path: Path, x3: tuple[X3Simulator, str]
) -> None:
    sim, url = x3
    # Calls 2 s apart: the second command waits for its slot under a lease renewed every third of a second.
    # max_in_flight 1: while the second command waits here, this executor claims nothing else.
    wb = await start(tmp_path, sim, url, lease="1s", rate_limit="30/m", max_in_flight=1)
    try:
        _, first = await post(wb, order("Q-L1", customer="C00001"), "lost-1")
        assert (await finished(wb, first["commandId"]))["status"] == "succeeded"
        _, second = await post(wb, order("Q-L2", customer="C00002"), "lost-2")

        async def claimed_here() -> bool:
            return (await status_of(wb, second["commandId"]))["status"] == "running"

        await until(claimed_here, timeout=5)
        # The store was out of this executor's reach for a whole lease, say, and another executor took over.
        store = wb.runtime.store
        assert await store.release_command_leases(wb.executor.owner) == 1
        later = datetime.now(UTC)
        (taken,) = await store.claim_commands(
            "elsewhere", "aldgate-x3", now=later, lease_until=later + timedelta(minutes=5), limit=1
        )
        assert taken.id == second["commandId"]
        # At its next renewal the old holder learns it lost the lease; when its slot comes it sends nothing.
        await until(lambda: not any(w.running for w in wb.executor.workers.values()), timeout=10)
        assert [o["CUSORDREF"] for o in sim.orders] == ["Q-L1"]
        row = await store.get_command(second["commandId"])
        assert row is not None
        assert (row.status, row.attempts) == ("running", 2)
    finally:
        await stop(wb)


async def test_requests_are_checked_in_order_credentials_first(tmp_path: Path, x3: tuple[X3Simulator, str]) -> None:
    sim, url = x3
    wb = await start(tmp_path, sim, url, allow=["order/create"])
    try:
        bad = {"Authorization": "Bearer wrong"}
        assert (await post(wb, order(), "k", **bad))[0] == 401
        assert (await post(wb, order(), "k", path="/v1/sources/nope/commands/order/create"))[0] == 401
        assert (await post(wb, {}, "k", path="/v1/sources/aldgate-x3/commands/customer/create"))[0] == 404
        assert (await post(wb, {}, "k", path="/v1/sources/aldgate-x3/commands/nonsense"))[0] == 404
        assert (await post(wb, order(), ""))[0] == 400
        assert (await post(wb, order(), "x" * 256))[0] == 400
        assert (await post(wb, order(), "caf\u00e9".encode().decode("latin-1")))[0] == 400
        status, body = await post(wb, order(customerReference=None, lines=[{"partNumber": "A", "quantity": 0}]), "k")
        assert status == 422
        assert body["quarantineId"] is not None
        assert {d["path"] for d in body["details"]} == {"$.customerReference", "$.lines[0].quantity"}
        async with wb.client.post(
            ORDER_PATH, data=b"x", headers={**AUTH, "Content-Type": "text/plain", "Idempotency-Key": "k"}
        ) as r:
            assert r.status == 415
        async with wb.client.get("/v1/commands/cmd_nope", headers={"Authorization": f"Bearer {QUOTES_TOKEN}"}) as r:
            assert r.status == 404
        async with wb.client.get("/v1/commands/cmd_nope", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        assert sim.orders == []
    finally:
        await stop(wb)


async def test_commands_of_one_customer_run_in_order(tmp_path: Path, x3: tuple[X3Simulator, str]) -> None:
    sim, url = x3
    sim.create_delay_s = 0.02
    wb = await start(tmp_path, sim, url, max_in_flight=4)
    try:
        ids = [(await post(wb, order(f"Q-O{n}"), f"o-{n}"))[1]["commandId"] for n in range(6)]
        for command_id in ids:
            await finished(wb, command_id)
        assert [o["CUSORDREF"] for o in sorted(sim.orders, key=lambda o: o["SOHNUM"])] == [f"Q-O{n}" for n in range(6)]
        assert sim.max_creates_in_flight == 1  # one customer: one at a time despite max_in_flight 4
    finally:
        await stop(wb)


async def test_operators_list_show_and_retry_a_failed_command_through_the_cli_and_the_admin_api(
    tmp_path: Path, x3: tuple[X3Simulator, str]
) -> None:
    sim, url = x3
    admin_token = "admin-token-for-tests-0123456789"
    subscriber = Subscriber()
    await subscriber.start()
    data = base_config(tmp_path, sources=[x3_source(url, sim)], admin={"tokens": [admin_token]})
    config_path = write_config(tmp_path, data)
    stack = await start_stack(tmp_path, data)
    executor = CommandExecutor(stack.runtime, poll_interval_s=0.05)
    await executor.start()
    admin = {"Authorization": f"Bearer {admin_token}"}
    try:
        # A customer X3 does not know yet: refused; once the customer exists, an operator retries it.
        _, accepted = await post(stack, order("Q-OPS", customer="C77777"), "ops-1")
        command_id = accepted["commandId"]
        failed = await finished(stack, command_id)
        assert failed["error"]["erpMessages"] == ["BPCORD: Record does not exist (C77777) [Customers]"]
        listed = await ainvoke_cli("commands", "list", "-c", str(config_path), "--status", "failed", "--json")
        assert [r["commandId"] for r in orjson.loads(listed.stdout)] == [command_id]
        shown = await ainvoke_cli("commands", "show", command_id, "-c", str(config_path), "--json")
        assert orjson.loads(shown.stdout)["body"]["customerReference"] == "Q-OPS"
        async with stack.client.get(f"/v1/admin/commands/{command_id}", headers=admin) as r:
            assert (r.status, (await r.json())["status"]) == (200, "failed")
        async with stack.client.get(f"/v1/commands/{command_id}", headers=admin) as r:
            assert r.status == 200
        sim.records["BPCUSTOMER"]["C77777"] = {"BPCNUM": "C77777", "BPCNAM": "Late Customer"}
        retried = await ainvoke_cli("commands", "retry", command_id, "-c", str(config_path))
        assert retried.returncode == 0, retried.stderr
        doc = await finished(stack, command_id)
        assert (doc["status"], doc["attempts"]) == ("succeeded", 2)
        assert [o["CUSORDREF"] for o in sim.orders] == ["Q-OPS"]
        # Only a failed command can be retried.
        async with stack.client.post(f"/v1/admin/commands/{command_id}/retry", headers=admin) as r:
            assert r.status == 409
        again = await ainvoke_cli("commands", "retry", command_id, "-c", str(config_path))
        assert again.returncode == 1
        async with stack.client.get("/v1/admin/commands?source=aldgate-x3", headers=admin) as r:
            assert [c["commandId"] for c in await r.json()] == [command_id]
    finally:
        await executor.stop(1.0)
        await stop_stack(stack)
        await subscriber.stop()

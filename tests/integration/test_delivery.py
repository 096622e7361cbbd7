"""The delivery engine against real subscribers on 127.0.0.1; signatures checked with standardwebhooks."""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from conftest import Stack, start_stack, stop_stack
from helpers import HUB_TOKEN, WHSEC, arun_cli, base_config, sample_event, until, write_config
from standardwebhooks import Webhook
from subscriber import Subscriber, subscriber_config

from relay.store.base import DeliveryFilter

AUTH = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}
SECOND_SECRET = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24tdGVzdA=="


async def push(stack: Stack, event: dict[str, Any]) -> int:
    async with stack.client.post("/v1/sources/hub/events", data=orjson.dumps(event), headers=AUTH) as r:
        await r.read()
        return int(r.status)


async def delivery_state(stack: Stack, event_id: str) -> tuple[str, int] | None:
    rows = await stack.store.list_deliveries(DeliveryFilter(event_id=event_id))
    return (rows[0].state, rows[0].attempts) if rows else None


async def state_is(stack: Stack, event_id: str, expected: tuple[str, int]) -> bool:
    return await delivery_state(stack, event_id) == expected


@pytest.fixture
async def subscribers() -> Any:
    subs = [Subscriber() for _ in range(3)]
    for s in subs:
        await s.start()
    yield subs
    for s in subs:
        await s.stop()


async def test_globs_and_filters_route_each_event_to_exactly_its_subscribers(
    tmp_path: Path, subscribers: list[Subscriber]
) -> None:
    inventory, orders, main_wh = subscribers
    inventory.secrets = [WHSEC, SECOND_SECRET]
    data = base_config(
        tmp_path,
        subscribers=[
            subscriber_config("inventory", inventory.url, channels=["inventory/*"], secrets=[WHSEC, SECOND_SECRET]),
            subscriber_config("orders", orders.url, channels=["order/synced", "customer/*"]),
            subscriber_config("main-wh", main_wh.url, channels=["*"], filter={"data.warehouse": ["MAIN", "EAST"]}),
        ],
    )
    stack = await start_stack(tmp_path, data)
    try:
        events = [
            sample_event("inventory/synced", "i-main", warehouse="MAIN"),
            sample_event("inventory/synced", "i-west", warehouse="WEST"),
            sample_event("order/synced", "o-1"),
            sample_event("customer/deleted", "c-del"),
            sample_event("invoice/synced", "inv-1"),
        ]
        for e in events:
            assert await push(stack, e) == 202
        await until(lambda: len(inventory.requests) == 2 and len(orders.requests) == 2 and len(main_wh.requests) == 1)
        await asyncio.sleep(0.2)  # nothing else may arrive: give stray deliveries a chance to show up
        assert sorted(inventory.delivered_ids()) == ["i-main", "i-west"]
        assert sorted(orders.delivered_ids()) == ["c-del", "o-1"]
        assert main_wh.delivered_ids() == ["i-main"]
        for sub in subscribers:
            for r in sub.requests:
                assert r.verified
                assert r.headers["webhook-id"] == r.payload["eventId"]
                assert r.headers["relay-source"] == "hub"
                assert r.headers["relay-attempt"] == "1"
                assert r.headers["relay-replay"] == "false"
        # Rotation: two secrets → two signatures, each verifies on its own.
        r = inventory.requests[0]
        assert len(r.headers["webhook-signature"].split(" ")) == 2
        for secret in (WHSEC, SECOND_SECRET):
            Webhook(secret).verify(r.body, r.headers)
    finally:
        await stop_stack(stack)


def _failing(k: int, reply: Any) -> Any:
    count = {"n": 0}

    async def behaviour(sub: Subscriber, request: web.Request, body: bytes) -> Any:
        count["n"] += 1
        if count["n"] <= k:
            if reply == "timeout":
                await asyncio.sleep(1.5)
                return 200
            return reply
        return 200

    return behaviour


@pytest.mark.parametrize(
    ("reply", "min_gaps"),
    [
        (500, [0.08, 0.16]),
        ((503, {"Retry-After": "1"}), [0.95, 0.95]),
        ((429, {"Retry-After": "1"}), [0.95, 0.95]),
        ("timeout", [0.08, 0.16]),
    ],
    ids=["500", "503-retry-after", "429-retry-after", "timeout"],
)
async def test_failures_are_retried_on_schedule(tmp_path: Path, reply: Any, min_gaps: list[float]) -> None:
    sub = Subscriber(behaviour=_failing(2, reply))
    await sub.start()
    data = base_config(tmp_path, subscribers=[subscriber_config("s", sub.url, timeout="500ms")])
    stack = await start_stack(tmp_path, data)
    try:
        assert await push(stack, sample_event("order/synced", "retry-1")) == 202
        await until(lambda: len(sub.delivered) == 1, timeout=15)
        times = [r.at for r in sub.requests]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(sub.requests) == 3
        if reply == "timeout":
            gaps = [g - 0.5 for g in gaps]  # the timed-out attempt itself took 0.5 s
        for gap, minimum in zip(gaps, min_gaps, strict=True):
            assert gap >= minimum, gaps
        assert [r.headers["relay-attempt"] for r in sub.requests] == ["1", "2", "3"]
        assert len({r.headers["webhook-id"] for r in sub.requests}) == 1
        await until(lambda: state_is(stack, "retry-1", ("delivered", 3)))
        rows = await stack.store.list_deliveries(DeliveryFilter(event_id="retry-1"))
        attempts = await stack.store.list_attempts(rows[0].id)
        assert [a["status"] for a in attempts][-1] == 200
    finally:
        await stop_stack(stack)
        await sub.stop()


async def test_refused_connection_is_retried_until_the_endpoint_comes_up(tmp_path: Path) -> None:
    sub = Subscriber()
    url = await sub.start()
    await sub.stop()  # nothing listens on that port now
    data = base_config(tmp_path, subscribers=[subscriber_config("s", url, retry={"schedule": ["300ms"] * 10})])
    stack = await start_stack(tmp_path, data)
    try:
        assert await push(stack, sample_event("order/synced", "refused-1")) == 202

        async def failed_once() -> bool:
            rows = await stack.store.list_deliveries(DeliveryFilter(event_id="refused-1"))
            return rows[0].attempts >= 1

        await until(failed_once)
        rows = await stack.store.list_deliveries(DeliveryFilter(event_id="refused-1"))
        assert "connection" in (rows[0].last_error or "")
        port = int(url.split(":")[2].split("/")[0])
        app = web.Application()
        got: list[bytes] = []

        async def handler(request: web.Request) -> web.Response:
            got.append(await request.read())
            return web.Response(status=204)

        app.router.add_post("/hook", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            await until(lambda: len(got) == 1, timeout=10)
        finally:
            await runner.cleanup()
    finally:
        await stop_stack(stack)


async def test_always_failing_ends_dead_and_redrive_delivers(tmp_path: Path) -> None:
    healthy = {"ok": False}

    def behaviour(sub: Subscriber, request: web.Request, body: bytes) -> int:
        return 200 if healthy["ok"] else 500

    sub = Subscriber(behaviour=behaviour)
    await sub.start()
    data = base_config(tmp_path, subscribers=[subscriber_config("s", sub.url)])
    config_path = write_config(tmp_path, data)
    stack = await start_stack(tmp_path, data)
    try:
        assert await push(stack, sample_event("order/synced", "dead-1")) == 202

        async def dead() -> bool:
            rows = await stack.store.list_deliveries(DeliveryFilter(event_id="dead-1"))
            return rows[0].state == "dead"

        await until(dead, timeout=10)
        assert len(sub.requests) == 4  # the first attempt and the three scheduled retries
        listed = await arun_cli("dlq", "list", "-c", str(config_path), "--json")
        assert listed.returncode == 0, listed.stderr
        (row,) = orjson.loads(listed.stdout)
        assert row["eventId"] == "dead-1"
        assert "HTTP 500" in row["lastError"]

        async def dead_gauge() -> bool:
            async with stack.client.get("/metrics") as r:
                return 'relay_dead_letters{subscriber="s"} 1.0' in await r.text()

        await until(dead_gauge, timeout=5)
        async with stack.client.get("/metrics") as r:
            text = await r.text()
        assert 'relay_webhook_attempts_total{outcome="dead",subscriber="s"}' in text
        assert 'relay_webhook_attempts_total{outcome="retry",subscriber="s"}' in text
        assert "relay_webhook_attempt_duration_seconds_bucket" in text
        healthy["ok"] = True
        redriven = await arun_cli("dlq", "redrive", "-c", str(config_path), "--subscriber", "s")
        assert redriven.returncode == 0, redriven.stderr
        assert "1 dead delivery redriven" in redriven.stdout
        await until(lambda: len(sub.delivered) == 1, timeout=5)  # picked up from another process's write
    finally:
        await stop_stack(stack)
        await sub.stop()


async def test_410_disables_the_subscriber_until_enabled(tmp_path: Path) -> None:
    gone = {"yes": True}
    sub = Subscriber(behaviour=lambda s, r, b: 410 if gone["yes"] else 200)
    await sub.start()
    data = base_config(tmp_path, subscribers=[subscriber_config("s", sub.url)])
    config_path = write_config(tmp_path, data)
    stack = await start_stack(tmp_path, data)
    try:
        assert await push(stack, sample_event("order/synced", "gone-1")) == 202
        await until(lambda: len(sub.requests) == 1)
        assert await push(stack, sample_event("order/synced", "gone-2")) == 202

        async def disabled() -> bool:
            states = await stack.store.subscriber_states()
            return "s" in states and states["s"].disabled

        await until(disabled)
        listed = orjson.loads((await arun_cli("subscribers", "list", "-c", str(config_path), "--json")).stdout)
        assert listed[0]["disabled"] is True
        assert "410" in listed[0]["disabledReason"]
        await asyncio.sleep(0.5)
        assert len(sub.requests) == 1  # nothing is sent while disabled
        gone["yes"] = False
        enabled = await arun_cli("subscribers", "enable", "-c", str(config_path), "s")
        assert enabled.returncode == 0
        await until(lambda: sorted(sub.delivered_ids()) == ["gone-1", "gone-2"], timeout=5)
    finally:
        await stop_stack(stack)
        await sub.stop()


async def test_a_down_and_a_slow_subscriber_do_not_slow_a_healthy_one(tmp_path: Path) -> None:
    async def slow(sub: Subscriber, request: web.Request, body: bytes) -> int:
        await asyncio.sleep(5)
        return 200

    slow_sub = Subscriber(behaviour=slow)
    healthy = Subscriber()
    down = Subscriber()
    for s in (slow_sub, healthy, down):
        await s.start()
    await down.stop()
    data = base_config(
        tmp_path,
        subscribers=[
            subscriber_config("down", down.url, timeout="10s", retry={"schedule": ["50ms"] * 20, "max_age": "1h"}),
            subscriber_config("slow", slow_sub.url, timeout="10s", max_in_flight=4),
            subscriber_config("healthy", healthy.url, max_in_flight=16),
        ],
    )
    stack = await start_stack(tmp_path, data)
    try:
        answered: dict[str, float] = {}
        for i in range(500):
            event_id = f"lat-{i}"
            assert await push(stack, sample_event("order/synced", event_id)) == 202
            answered[event_id] = time.monotonic()
            if i % 10 == 9:
                await asyncio.sleep(0.01)  # ≈ 1,000 events/s: a steady stream, not one burst
        await until(lambda: len(healthy.delivered) == 500, timeout=30)
        latencies = sorted(r.at - answered[r.event_id] for r in healthy.delivered)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        assert p99 < 0.1, f"p99 {p99 * 1000:.1f} ms, median {statistics.median(latencies) * 1000:.1f} ms"
    finally:
        await stop_stack(stack)
        for s in (slow_sub, healthy):
            await s.stop()


async def test_per_key_ordering_with_random_failures(tmp_path: Path) -> None:
    rng = random.Random(7)

    def flaky(sub: Subscriber, request: web.Request, body: bytes) -> int:
        return 500 if rng.random() < 0.2 else 200

    sub = Subscriber(behaviour=flaky)
    await sub.start()
    data = base_config(
        tmp_path,
        subscribers=[
            subscriber_config(
                "ordered",
                sub.url,
                ordering="per-key",
                max_in_flight=8,
                retry={"schedule": ["20ms"] * 30, "max_age": "1h"},
            ),
        ],
    )
    stack = await start_stack(tmp_path, data)
    try:
        for i in range(200):
            key = f"SO-{i % 10}"
            version = f"2026-11-20T10:{i // 10:02d}:00Z"
            event = sample_event("order/synced", f"ord-{i}", orderNumber=key)
            event["timestamp"] = version
            assert await push(stack, event) == 202
        await until(lambda: len(sub.delivered) == 200, timeout=60)
        per_key: dict[str, list[str]] = {}
        for r in sub.delivered:
            per_key.setdefault(r.payload["data"]["orderNumber"], []).append(r.payload["timestamp"])
        assert len(per_key) == 10
        for key, versions in per_key.items():
            assert versions == sorted(versions), key
    finally:
        await stop_stack(stack)
        await sub.stop()


async def test_stale_and_collapse(tmp_path: Path) -> None:
    gate = asyncio.Event()

    async def gated(sub: Subscriber, request: web.Request, body: bytes) -> int:
        await gate.wait()
        return 200

    plain = Subscriber()
    collapsing = Subscriber(behaviour=gated)
    for s in (plain, collapsing):
        await s.start()
    data = base_config(
        tmp_path,
        subscribers=[
            subscriber_config("plain", plain.url, ordering="per-key"),
            subscriber_config("collapsing", collapsing.url, ordering="per-key", collapse=True, timeout="30s"),
        ],
    )
    stack = await start_stack(tmp_path, data)

    def ev(event_id: str, minute: int) -> dict[str, Any]:
        return sample_event("customer/synced", event_id, lastModified=f"2026-11-20T10:{minute:02d}:00Z")

    try:
        assert await push(stack, ev("v5", 5)) == 202
        await until(lambda: len(plain.delivered) == 1 and len(collapsing.requests) == 1)  # v5 held by the gate
        # An older version after a newer one was delivered: stale for `plain`.
        assert await push(stack, ev("v3", 3)) == 202
        # Newer versions while v5 is in flight to `collapsing`: v6 is superseded by v7.
        assert await push(stack, ev("v6", 6)) == 202
        assert await push(stack, ev("v7", 7)) == 202
        await until(lambda: "v7" in plain.delivered_ids())
        gate.set()
        await until(lambda: len(collapsing.delivered) == 2)
        assert collapsing.delivered_ids() == ["v5", "v7"]
        assert plain.delivered_ids() == ["v5", "v6", "v7"]
        rows = {
            (d.event_id, d.subscriber): d.state for d in await stack.store.list_deliveries(DeliveryFilter(limit=50))
        }
        assert rows[("v3", "plain")] == "stale"
        assert rows[("v6", "collapsing")] == "superseded"
    finally:
        gate.set()
        await stop_stack(stack)
        for s in (plain, collapsing):
            await s.stop()


async def test_cli_replay_while_running_is_delivered_flagged(tmp_path: Path) -> None:
    sub = Subscriber()
    await sub.start()
    data = base_config(tmp_path, subscribers=[subscriber_config("s", sub.url, channels=["order/*"])])
    config_path = write_config(tmp_path, data)
    stack = await start_stack(tmp_path, data)
    try:
        for i in range(3):
            assert await push(stack, sample_event("order/synced", f"rp-{i}")) == 202
        assert await push(stack, sample_event("invoice/synced", "rp-inv")) == 202
        await until(lambda: len(sub.delivered) == 3)
        dry = await arun_cli("replay", "-c", str(config_path), "--subscriber", "s", "--dry-run")
        assert "4 event(s) match; 3 deliveries would be created" in dry.stdout, dry.stdout + dry.stderr
        assert len(await stack.store.list_deliveries(DeliveryFilter())) == 3
        done = await arun_cli("replay", "-c", str(config_path), "--event-id", "rp-1")
        assert done.returncode == 0, done.stderr
        assert "1 replay deliveries created" in done.stdout
        await until(lambda: len(sub.delivered) == 4, timeout=5)
        last = sub.delivered[-1]
        assert (last.event_id, last.headers["relay-replay"], last.verified) == ("rp-1", "true", True)
        assert last.headers["webhook-id"] == sub.delivered[1].headers["webhook-id"]
    finally:
        await stop_stack(stack)
        await sub.stop()


async def test_admin_api_requires_token_and_lists(tmp_path: Path) -> None:
    sub = Subscriber()
    await sub.start()
    data = base_config(tmp_path, admin={"tokens": ["adm-1"]}, subscribers=[subscriber_config("s", sub.url)])
    stack = await start_stack(tmp_path, data)
    try:
        assert await push(stack, sample_event("order/synced", "adm-ev")) == 202
        await until(lambda: len(sub.delivered) == 1)
        async with stack.client.get("/v1/admin/subscribers") as r:
            assert r.status == 401
        async with stack.client.get("/v1/admin/subscribers", headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        hdr = {"Authorization": "Bearer adm-1"}
        async with stack.client.get("/v1/admin/subscribers", headers=hdr) as r:
            body = await r.json()
        assert body[0]["name"] == "s"
        assert body[0]["lastSuccessAt"]
        async with stack.client.get("/v1/admin/events/adm-ev", headers=hdr) as r:
            body = await r.json()
        assert body["deliveries"][0]["state"] == "delivered"
        async with stack.client.post("/v1/admin/replay", headers=hdr, json={"eventId": "adm-ev"}) as r:
            assert (r.status, (await r.json())["deliveries"]) == (202, 1)
        await until(lambda: len(sub.delivered) == 2)
        async with stack.client.get("/v1/admin/deliveries?since=garbage", headers=hdr) as r:
            assert r.status == 400
    finally:
        await stop_stack(stack)
        await sub.stop()


async def test_rate_limit_and_max_in_flight_are_respected(tmp_path: Path) -> None:
    in_flight = {"now": 0, "max": 0}

    async def counting(sub: Subscriber, request: web.Request, body: bytes) -> int:
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        await asyncio.sleep(0.05)
        in_flight["now"] -= 1
        return 200

    limited, narrow = Subscriber(), Subscriber(behaviour=counting)
    for s in (limited, narrow):
        await s.start()
    data = base_config(
        tmp_path,
        subscribers=[
            subscriber_config("limited", limited.url, rate_limit=20),
            subscriber_config("narrow", narrow.url, max_in_flight=3),
        ],
    )
    stack = await start_stack(tmp_path, data)
    try:
        for i in range(60):
            assert await push(stack, sample_event("order/synced", f"rl-{i}")) == 202
        await until(lambda: len(limited.delivered) == 60 and len(narrow.delivered) == 60, timeout=20)
        times = sorted(r.at for r in limited.delivered)
        # 20/s with a burst of 20: the last of 60 cannot arrive before ~2 s after the first.
        assert times[-1] - times[0] >= 1.8
        assert in_flight["max"] == 3
    finally:
        await stop_stack(stack)
        for s in (limited, narrow):
            await s.stop()

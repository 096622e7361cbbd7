"""The system clock steps (NTP after a suspend, an operator, a restored VM) while retries wait and attempts are
in flight: retries keep their delays, nothing waits for the old time to come round, nothing is sent twice.

The machine's clock cannot be stepped from a test, so the dispatcher's wall clock gets an offset here; the
monotonic clock, which the relay compares it with, is the real one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from conftest import Stack, start_stack, stop_stack
from helpers import HUB_TOKEN, base_config, sample_event, until
from subscriber import Subscriber, subscriber_config

import relay.deliver.dispatcher
import relay.ingest.json_push

HEADERS = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}


@dataclass
class SteppableClock:
    offset_s: float = 0.0

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset_s)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SteppableClock:
    steppable = SteppableClock()

    class SteppedDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return steppable.now().astimezone(tz) if tz is not None else steppable.now()

    # The dispatcher's clock and the ingest clock (received_at, hence a new delivery's first due time).
    monkeypatch.setattr(relay.deliver.dispatcher, "_now", steppable.now)
    monkeypatch.setattr(relay.ingest.json_push, "datetime", SteppedDatetime)
    return steppable


Start = Callable[..., Awaitable[tuple[Stack, Subscriber]]]


@pytest.fixture
async def hook(tmp_path: Path) -> AsyncIterator[Start]:
    made: list[tuple[Stack, Subscriber]] = []

    async def start(behaviour: Any, **sub_options: object) -> tuple[Stack, Subscriber]:
        sub = Subscriber(behaviour=behaviour)
        await sub.start()
        stack = await start_stack(
            tmp_path, base_config(tmp_path, subscribers=[subscriber_config("s", sub.url, **sub_options)])
        )
        made.append((stack, sub))
        return stack, sub

    yield start
    for stack, sub in made:
        await stop_stack(stack)
        await sub.stop()


async def _push(stack: Stack, event_id: str) -> None:
    r = await stack.client.post(
        "/v1/sources/hub/events", data=orjson.dumps(sample_event("order/synced", event_id)), headers=HEADERS
    )
    assert r.status == 202, await r.text()


async def test_clock_stepping_back_an_hour_does_not_hold_a_waiting_retry(clock: SteppableClock, hook: Start) -> None:
    def first_fails(sub: Subscriber, request: web.Request, body: bytes) -> int:
        return 500 if request.headers["relay-attempt"] == "1" else 200

    # The first failure also opens the circuit for 1 s: the breaker must not wait for the old time either.
    stack, sub = await hook(
        first_fails, retry={"schedule": ["1s"], "max_age": "1d"}, circuit={"failure_threshold": 1, "cooldown": "1s"}
    )
    await _push(stack, "back-1")
    await until(lambda: len(sub.requests) == 1 and sub.requests[0].status == 500, timeout=5)
    clock.offset_s = -3600.0
    await until(lambda: sub.delivered_ids() == ["back-1"], timeout=10)
    retry_after_s = sub.requests[1].at - sub.requests[0].at
    assert 0.7 <= retry_after_s < 5, retry_after_s
    # New events after the step go out at once.
    await _push(stack, "back-2")
    await until(lambda: "back-2" in sub.delivered_ids(), timeout=10)


async def test_clock_stepping_forward_keeps_retry_delays_and_leases(clock: SteppableClock, hook: Start) -> None:
    async def slow_then_fail(sub: Subscriber, request: web.Request, body: bytes) -> int:
        if request.headers["relay-attempt"] == "1":
            await asyncio.sleep(1.5)  # in flight while the clock steps
            return 500
        return 200

    stack, sub = await hook(slow_then_fail, timeout="5s", retry={"schedule": ["2s"], "max_age": "1d"})
    await _push(stack, "fwd-1")
    await until(lambda: len(sub.requests) == 1, timeout=5)
    first_started = time.monotonic()
    # An hour forward: the lease of the attempt in flight must not look expired (a second, concurrent send),
    # and the retry must still wait its 2 s rather than go at once.
    clock.offset_s = 3600.0
    await until(lambda: sub.delivered_ids() == ["fwd-1"], timeout=15)
    assert [r.status for r in sub.requests] == [500, 200]
    second_started = sub.requests[1].at
    assert second_started - first_started >= 1.5 + 2.0 * 0.8 - 0.2, second_started - first_started

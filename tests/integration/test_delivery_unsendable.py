"""Deliveries that can never be sent end dead with their reason, and never hold up the ones behind them.

Such events are put into the store directly (ingest refuses them at the door; they may still be stored by
older versions, pollers or imports), then the dispatcher runs against a real subscriber on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import Stack, start_stack, stop_stack
from helpers import base_config, sample_event, until
from subscriber import Subscriber, subscriber_config

from relay.events import Event
from relay.store.base import DeliveryFilter, DeliveryPlan, NewEvent

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def order_event(event_id: str, order: str, minute: int, *, channel: str = "order/synced", source: str = "hub") -> Event:
    modified = (T0 + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")
    payload = sample_event("order/synced", event_id, orderNumber=order, lastModified=modified)
    return Event(
        event_id=event_id,
        channel=channel,
        source=source,
        tenant_id="HALLORAN",
        entity_key=order,
        version=modified,
        occurred_at=T0 + timedelta(minutes=minute),
        received_at=datetime.now(UTC),
        payload=orjson.dumps(payload),
    )


async def store_events(stack: Stack, subscriber: str, events: list[Event], *, per_key: bool) -> None:
    plans = [DeliveryPlan(subscriber, check_stale=per_key)]
    outcomes = await stack.store.ingest([NewEvent(event, plans) for event in events])
    assert [o.status for o in outcomes] == ["accepted"] * len(events)
    stack.dispatcher.wake()


async def delivery_row(stack: Stack, event_id: str) -> Any:
    rows = await stack.store.list_deliveries(DeliveryFilter(event_id=event_id))
    return rows[0] if rows else None


@pytest.fixture
async def receiver() -> AsyncIterator[Subscriber]:
    sub = Subscriber()
    await sub.start()
    yield sub
    await sub.stop()


@pytest.fixture
def loop_errors() -> list[dict[str, Any]]:
    """What the event loop reports as unhandled (e.g. `Task exception was never retrieved`)."""
    return []


async def run_case(
    tmp_path: Path, receiver: Subscriber, ordering: str, bad: Event, errors: list[dict[str, Any]]
) -> tuple[Stack, Any]:
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
    data = base_config(tmp_path, subscribers=[subscriber_config("s", receiver.url, ordering=ordering)])
    stack = await start_stack(tmp_path, data)
    order = bad.entity_key or "SO-7"
    goods = [order_event("good-2", order, 2), order_event("good-3", order, 3)]
    await store_events(stack, "s", [bad, *goods], per_key=ordering == "per-key")
    await until(lambda: receiver.delivered_ids() == ["good-2", "good-3"], timeout=10)

    async def bad_finished() -> bool:
        row = await delivery_row(stack, bad.event_id)
        return row is not None and row.state == "dead"

    await until(bad_finished, timeout=10)
    return stack, await delivery_row(stack, bad.event_id)


@pytest.mark.parametrize("ordering", ["per-key", "none"])
async def test_a_control_character_in_the_event_id_ends_dead_at_once_and_the_key_moves_on(
    tmp_path: Path, receiver: Subscriber, ordering: str, loop_errors: list[dict[str, Any]]
) -> None:
    stack, row = await run_case(tmp_path, receiver, ordering, order_event("pk-bad-1\n", "SO-7", 1), loop_errors)
    try:
        assert row.attempts == 1
        assert row.last_error == (
            "cannot be sent: webhook-id has a control character (U+000A), which an HTTP header cannot carry"
            " (not retried: it cannot succeed)"
        )
        attempts = await stack.store.list_attempts(row.id)
        assert [(a["attempt"], a["status"]) for a in attempts] == [(1, None)]
        assert "webhook-id has a control character (U+000A)" in attempts[0]["error"]
        # Never sent, and the good events of its key went after it, in order.
        assert [r.event_id for r in receiver.requests] == ["good-2", "good-3"]
        assert all(r.verified for r in receiver.requests)
    finally:
        await stop_stack(stack)
    gc.collect()
    assert loop_errors == []


@pytest.mark.parametrize(
    ("bad", "header"),
    [
        (order_event("bad-channel", "SO-8", 1, channel="order/synced\r\nx-injected: 1"), "relay-channel"),
        (order_event("bad-source", "SO-8", 1, source="hub\x00"), "relay-source"),
        (order_event("bad-del\x7f", "SO-8", 1), "webhook-id"),
    ],
    ids=["channel-crlf", "source-nul", "id-del"],
)
async def test_an_attempt_whose_headers_cannot_be_built_is_recorded_and_dead(
    tmp_path: Path, receiver: Subscriber, bad: Event, header: str, loop_errors: list[dict[str, Any]]
) -> None:
    stack, row = await run_case(tmp_path, receiver, "per-key", bad, loop_errors)
    try:
        assert row.attempts == 1
        assert row.last_error.startswith(f"cannot be sent: {header} has ")
        assert row.last_error.endswith("(not retried: it cannot succeed)")
        assert [r.event_id for r in receiver.requests] == ["good-2", "good-3"]
        assert not any("x-injected" in r.headers for r in receiver.requests)
    finally:
        await stop_stack(stack)
    gc.collect()
    assert loop_errors == []

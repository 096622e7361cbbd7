"""Subscriber URLs that point at private networks are refused unless allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import start_stack, stop_stack
from helpers import HUB_TOKEN, base_config, sample_event, until
from subscriber import Subscriber, subscriber_config

from relay.config import ConfigError, config_from_mapping
from relay.store.base import DeliveryFilter


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/h", "http://10.0.0.1/h", "http://169.254.169.254/latest/meta-data", "http://[::1]:9/h"],
)
def test_private_literal_urls_are_refused_unless_allowed(url: str) -> None:
    sub = subscriber_config("s", url)
    sub["allow_private_network"] = False
    with pytest.raises(ConfigError, match="url refused"):
        config_from_mapping({"subscribers": [sub]})
    sub["allow_private_network"] = True
    assert config_from_mapping({"subscribers": [sub]}).subscribers[0].url == url


async def test_a_name_resolving_to_loopback_is_refused_at_connect_time(tmp_path: Path) -> None:
    sub = Subscriber()
    url = (await sub.start()).replace("127.0.0.1", "localhost")
    data = base_config(
        tmp_path,
        subscribers=[
            {**subscriber_config("blocked", url), "allow_private_network": False},
            subscriber_config("allowed", url.replace("localhost", "127.0.0.1")),
        ],
    )
    stack = await start_stack(tmp_path, data)
    try:
        async with stack.client.post(
            "/v1/sources/hub/events",
            json=sample_event("order/synced", "ssrf-1"),
            headers={"Authorization": f"Bearer {HUB_TOKEN}"},
        ) as r:
            assert r.status == 202

        async def blocked_attempted() -> bool:
            rows = await stack.store.list_deliveries(DeliveryFilter(subscriber="blocked"))
            return bool(rows) and rows[0].attempts >= 1

        await until(blocked_attempted)
        await until(lambda: len(sub.requests) == 1)
        rows = await stack.store.list_deliveries(DeliveryFilter(subscriber="blocked"))
        assert "refused" in (rows[0].last_error or "") or "loopback" in (rows[0].last_error or "")
        assert len(sub.requests) == 1  # only the allowed subscriber reached the server
    finally:
        await stop_stack(stack)
        await sub.stop()

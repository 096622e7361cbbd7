"""Every spelling of a private address is judged as the address the client dials, at config load.

`http://１２７.０.０.１/` is dialled as 127.0.0.1 (yarl folds Unicode forms to ASCII before aiohttp connects,
and aiohttp never asks the resolver about an IP literal): such URLs are refused like 127.0.0.1 itself, and
a relay configured with one does not start, so a receiver on 127.0.0.1 never hears from it.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from conftest import start_stack, stop_stack
from helpers import HUB_TOKEN, arun_cli, base_config, relay_process, sample_event, until, write_config
from subscriber import Subscriber, subscriber_config

from relay.config import ConfigError, config_from_mapping

# host spelling → what the refusal says (the port is the receiver's)
SPELLINGS = {
    "１２７.０.０.１": "url refused: 127.0.0.1 is loopback",
    "127。0。0。1": "url refused: 127.0.0.1 is loopback",
    "①②⑦.0.0.1": "url refused: 127.0.0.1 is loopback",
    "１２７．０．０．１": "url refused: 127.0.0.1 is loopback",
    "２１３０７０６４３３": "url refused: numeric host form not allowed (it means 127.0.0.1, loopback)",
    "0x7f.1": "url refused: numeric host form not allowed (it means 127.0.0.1, loopback)",
    "0177.0.0.1": "url refused: numeric host form not allowed (it means 127.0.0.1, loopback)",
    "127.0.0.1.": "url refused: numeric host form not allowed (it means 127.0.0.1, loopback)",
    "[::ffff:127.0.0.1]": "is loopback (IPv4-mapped 127.0.0.1)",
    "[0:0:0:0:0:0:0:1]": "url refused: ::1 is loopback",
}


@pytest.fixture
async def receiver() -> Subscriber:
    sub = Subscriber()
    await sub.start()
    yield sub  # type: ignore[misc]
    await sub.stop()


def _port(receiver: Subscriber) -> int:
    return int(receiver.url.rsplit(":", 1)[1].split("/", 1)[0])


@pytest.mark.parametrize(("host", "message"), SPELLINGS.items())
def test_each_spelling_is_refused_at_config_load(host: str, message: str) -> None:
    sub = {**subscriber_config("s", f"http://{host}:18081/x"), "allow_private_network": False}
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"subscribers": [sub]})
    assert any(message in problem and "allow_private_network: true" in problem for problem in info.value.problems)


async def test_check_config_names_each_refused_subscriber(tmp_path: Path, receiver: Subscriber) -> None:
    port = _port(receiver)
    hosts = list(SPELLINGS)
    subs = [
        {**subscriber_config(f"s{i}", f"http://{host}:{port}/hook"), "allow_private_network": False}
        for i, host in enumerate(hosts)
    ]
    path = write_config(tmp_path, base_config(tmp_path, subscribers=subs))
    result = await arun_cli("check-config", "-c", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for i, host in enumerate(hosts):
        assert any(f"subscribers[s{i}]" in line and SPELLINGS[host] in line for line in lines), (host, lines)
    assert receiver.requests == []


async def test_serve_refuses_such_a_url_and_the_receiver_hears_nothing(tmp_path: Path, receiver: Subscriber) -> None:
    port = _port(receiver)
    subs = [
        {**subscriber_config(f"s{i}", f"http://{host}:{port}/hook"), "allow_private_network": False}
        for i, host in enumerate(["１２７.０.０.１", "127。0。0。1", "①②⑦.0.0.1"])
    ]
    path = write_config(tmp_path, base_config(tmp_path, subscribers=subs))
    with relay_process(path, tmp_path) as relay:
        try:
            code = await asyncio.to_thread(relay.wait, 20)
        except subprocess.TimeoutExpired:
            pytest.fail("relay serve started with subscriber URLs that dial 127.0.0.1")
        log = relay.log_text()
    assert code != 0
    assert log.count("127.0.0.1 is loopback") >= 3, log[-2000:]
    assert receiver.requests == []


async def test_an_allowed_unicode_spelling_is_delivered_to_the_address_it_names(
    tmp_path: Path, receiver: Subscriber
) -> None:
    url = receiver.url.replace("127.0.0.1", "１２７.０.０.１")
    data = base_config(tmp_path, subscribers=[subscriber_config("s", url)])
    stack = await start_stack(tmp_path, data)
    try:
        async with stack.client.post(
            "/v1/sources/hub/events",
            json=sample_event("order/synced", "uni-1"),
            headers={"Authorization": f"Bearer {HUB_TOKEN}"},
        ) as r:
            assert r.status == 202
        await until(lambda: receiver.delivered_ids() == ["uni-1"])
    finally:
        await stop_stack(stack)

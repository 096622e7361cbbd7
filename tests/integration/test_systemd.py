"""`relay serve` under a simulated systemd: sd_notify, watchdog, SIGHUP reload, SIGTERM drain."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import socket
import time
from pathlib import Path

import aiohttp
import orjson
import yaml
from helpers import HUB_TOKEN, arun_cli, base_config, relay_process, sample_event, until, write_config
from subscriber import Subscriber, subscriber_config

HEADERS = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}


class NotifySocket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []

    def drain(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            self.messages.append((time.monotonic(), data.decode()))
        return [m for _, m in self.messages]

    def close(self) -> None:
        self.sock.close()


async def test_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    config_path = write_config(tmp_path, base_config(tmp_path))
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    acked: list[str] = []
    try:
        with relay_process(config_path, tmp_path, env=env) as relay:
            await until(lambda: "READY=1" in notify.drain(), timeout=20)
            await relay.wait_ready()
            await until(lambda: notify.drain().count("WATCHDOG=1") >= 3, timeout=5)
            pings = [t for t, m in notify.messages if m == "WATCHDOG=1"]
            assert max(b - a for a, b in itertools.pairwise(pings)) < 0.4  # half of WATCHDOG_USEC
            async with aiohttp.ClientSession() as session:
                for i in range(50):
                    event = sample_event("order/synced", f"sd-{i}")
                    async with session.post(
                        relay.base_url + "/v1/sources/hub/events", data=orjson.dumps(event), headers=HEADERS
                    ) as r:
                        assert r.status == 202
                        acked.append(event["eventId"])
            relay.signal(signal.SIGTERM)
            code = await asyncio.to_thread(relay.wait, 20.0)
            assert code == 0
            assert "STOPPING=1" in notify.drain()
        listed = await arun_cli("events", "list", "-c", str(config_path), "--json", "--limit", "1000")
        assert {e["eventId"] for e in json.loads(listed.stdout)} == set(acked)
    finally:
        notify.close()


async def test_sighup_reloads_subscribers_and_rejects_invalid_config(tmp_path: Path) -> None:
    async def slowish(sub: Subscriber, request: aiohttp.web.Request, body: bytes) -> int:
        await asyncio.sleep(0.5)
        return 200

    first, second = Subscriber(behaviour=slowish), Subscriber()
    for s in (first, second):
        await s.start()
    notify = NotifySocket(tmp_path / "notify.sock")
    data = base_config(tmp_path, subscribers=[subscriber_config("first", first.url, timeout="5s")])
    config_path = write_config(tmp_path, data)
    try:
        with relay_process(config_path, tmp_path, env={"NOTIFY_SOCKET": str(notify.path)}) as relay:
            await relay.wait_ready()
            async with aiohttp.ClientSession() as session:

                async def push(event_id: str) -> None:
                    async with session.post(
                        relay.base_url + "/v1/sources/hub/events",
                        data=orjson.dumps(sample_event("order/synced", event_id)),
                        headers=HEADERS,
                    ) as r:
                        assert r.status == 202

                await push("before-1")
                await until(lambda: len(first.requests) == 1)  # in flight (the subscriber takes 0.5 s)
                data["subscribers"].append(subscriber_config("second", second.url))
                config_path.write_text(yaml.safe_dump(data))
                relay.signal(signal.SIGHUP)
                await until(lambda: any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in notify.drain()))
                await until(lambda: '"configuration reloaded"' in relay.log_text())
                await until(lambda: len(first.delivered) == 1)  # the in-flight delivery was not dropped
                await push("after-1")
                await until(lambda: second.delivered_ids() == ["after-1"] and len(first.delivered) == 2)

                config_path.write_text(yaml.safe_dump({**data, "subscribers": [{"name": "broken"}]}))
                relay.signal(signal.SIGHUP)
                await until(lambda: "reload rejected" in relay.log_text())
                assert "subscribers[broken].url: required key is missing" in relay.log_text()
                await push("after-2")
                await until(lambda: "after-2" in second.delivered_ids() and len(first.delivered) == 3)
    finally:
        notify.close()
        for s in (first, second):
            await s.stop()

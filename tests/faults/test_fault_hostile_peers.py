"""Peers that hold connections open: a subscriber that accepts TCP and never answers, and slow-loris senders."""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import time
from pathlib import Path

import aiohttp
import orjson
from fault_tools import HEADERS, Ledger, post_event
from helpers import arun_cli, base_config, relay_process, sample_event, until, write_config
from subscriber import Subscriber, subscriber_config


class BlackHole:
    """Accepts every connection, reads whatever comes, never writes a byte."""

    def __init__(self) -> None:
        self.open = 0
        self.most_open = 0
        self.accepted_at: list[float] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted_at.append(time.monotonic())
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        finally:
            self.open -= 1
            writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            # Handlers still reading would keep wait_closed() waiting: the relay has gone, EOF follows.
            await asyncio.wait_for(self.server.wait_closed(), timeout=10)


async def test_subscriber_that_never_answers_times_out_without_holding_up_others(tmp_path: Path) -> None:
    hole, shop = BlackHole(), Subscriber()
    await hole.start()
    await shop.start()
    data = base_config(
        tmp_path,
        server={"listen": base_config(tmp_path)["server"]["listen"], "drain_grace": "2s"},
        subscribers=[
            subscriber_config(
                "silent",
                hole.url,
                timeout="1s",
                max_in_flight=8,
                retry={"schedule": ["100ms"], "max_age": "1h"},
                circuit={"failure_threshold": 1000},  # the breaker has its own test below
            ),
            subscriber_config("shop", shop.url),
        ],
    )
    config_path = write_config(tmp_path, data)
    ids = [f"hole-{i}" for i in range(24)]
    try:
        with relay_process(config_path, tmp_path) as relay:
            await relay.wait_ready()
            url = relay.base_url + "/v1/sources/hub/events"
            ledger = Ledger()
            async with aiohttp.ClientSession() as session:
                started = time.monotonic()
                for event_id in ids:
                    assert await post_event(session, url, event_id, ledger) == 202
            # The healthy subscriber is not held up by the silent one's 1 s timeouts.
            await until(lambda: set(shop.delivered_ids()) == set(ids), timeout=10)
            shop_done_s = time.monotonic() - started
            assert shop_done_s < 3, f"the healthy subscriber waited {shop_done_s:.1f}s"

            # Each silent attempt times out; after the schedule the deliveries are dead with that reason.
            async def dead() -> list[dict[str, object]]:
                out = await arun_cli("dlq", "list", "-c", str(config_path), "--subscriber", "silent", "--json")
                assert out.returncode == 0, out.stderr
                rows: list[dict[str, object]] = json.loads(out.stdout)
                return rows

            async def all_dead() -> bool:
                return len(await dead()) == len(ids)

            await until(all_dead, timeout=30, interval=0.5)
            rows = await dead()
            assert all("timeout" in str(row) for row in rows), rows[:2]
            assert len(hole.accepted_at) >= 2 * len(ids)  # two attempts each
            # Connections to it are bounded by max_in_flight, not by the number of attempts.
            assert hole.most_open <= 8 + 4, hole.most_open

            # SIGTERM while attempts hang: the relay waits drain_grace (2 s), not the attempts, and exits 0.
            async with aiohttp.ClientSession() as session:
                for n in range(8):
                    assert await post_event(session, url, f"late-{n}", ledger) == 202
            await until(lambda: hole.open >= 1, timeout=10)
            stop_started = time.monotonic()
            relay.signal(signal.SIGTERM)
            assert await asyncio.to_thread(relay.wait, 20.0) == 0
            assert time.monotonic() - stop_started < 8
    finally:
        await shop.stop()
        await hole.stop()


async def test_circuit_opens_on_a_silent_subscriber_and_probes_one_at_a_time(tmp_path: Path) -> None:
    hole = BlackHole()
    await hole.start()
    data = base_config(
        tmp_path,
        subscribers=[
            subscriber_config(
                "silent",
                hole.url,
                timeout="1s",
                max_in_flight=8,
                retry={"schedule": ["100ms"] * 5, "max_age": "1h"},
                circuit={"failure_threshold": 3, "cooldown": "2s"},
            )
        ],
    )
    config_path = write_config(tmp_path, data)
    try:
        with relay_process(config_path, tmp_path) as relay:
            await relay.wait_ready()
            ledger = Ledger()
            async with aiohttp.ClientSession() as session:
                for n in range(12):
                    assert await post_event(session, relay.base_url + "/v1/sources/hub/events", f"c-{n}", ledger) == 202

                async def circuit_open() -> bool:
                    async with session.get(relay.base_url + "/metrics") as r:
                        return 'relay_subscriber_circuit_open{subscriber="silent"} 1.0' in await r.text()

                await until(circuit_open, timeout=10)
            opened_seen = time.monotonic()
            at = hole.accepted_at

            def timeline() -> list[float]:
                return [round(t - at[0], 2) for t in at]

            # Without the breaker the retries would go out 100 ms after each timeout. With it: nothing during
            # the 2 s cooldown (attempts claimed just before it opened may still connect in the first moments),
            # then a single probe; it times out after 1 s and the doubled cooldown (4 s) passes before the next.
            await until(lambda: any(t > opened_seen + 1.5 for t in at), timeout=10)
            assert not [t for t in at if opened_seen + 0.3 < t < opened_seen + 1.5], timeline()
            first_probe = next(t for t in at if t > opened_seen + 1.5)
            assert first_probe < opened_seen + 2.9, timeline()
            await until(lambda: any(t > first_probe for t in at), timeout=15)
            second_probe = next(t for t in at if t > first_probe)
            assert second_probe - first_probe >= 1.0 + 4.0 - 0.5, timeline()
    finally:
        await hole.stop()


async def _slow_headers(host: str, port: int, closed_after: list[float]) -> None:
    """Sends a request line and then one header byte every 200 ms, never finishing the headers."""
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    writer.write(b"POST /v1/sources/hub/events HTTP/1.1\r\nHost: relay\r\nX-Slow: ")
    try:
        while True:
            await writer.drain()
            with_data = asyncio.ensure_future(reader.read(1))
            done, _ = await asyncio.wait({with_data}, timeout=0.2)
            if done:
                break  # EOF (or an answer): the relay let go of the connection
            with_data.cancel()
            writer.write(b"a")
    except ConnectionError:
        pass
    closed_after.append(time.monotonic() - started)
    writer.close()


async def _slow_body(host: str, port: int, answers: list[tuple[float, bytes]]) -> None:
    """Sends complete headers promising 4 KiB, then one body byte every 200 ms."""
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    head = (
        "POST /v1/sources/hub/events HTTP/1.1\r\nHost: relay\r\n"
        f"Authorization: {HEADERS['Authorization']}\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n"
    )
    writer.write(head.encode())
    answer = b""
    try:
        while True:
            await writer.drain()
            reading = asyncio.ensure_future(reader.read(4096))
            done, _ = await asyncio.wait({reading}, timeout=0.2)
            if done:
                answer = reading.result()
                break
            reading.cancel()
            writer.write(b" ")
    except ConnectionError:
        pass
    answers.append((time.monotonic() - started, answer))
    writer.close()


async def test_slow_loris_senders_are_cut_off_and_do_not_slow_honest_senders(tmp_path: Path, soak: bool) -> None:
    data = base_config(tmp_path)
    data["server"]["read_timeout"] = "2s"
    config_path = write_config(tmp_path, data)
    header_lorises, body_lorises = (1000, 300) if soak else (200, 50)
    with relay_process(config_path, tmp_path) as relay:
        await relay.wait_ready()
        host, port = relay.base_url.removeprefix("http://").rsplit(":", 1)
        closed_after: list[float] = []
        answers: list[tuple[float, bytes]] = []
        lorises = [asyncio.create_task(_slow_headers(host, int(port), closed_after)) for _ in range(header_lorises)]
        lorises += [asyncio.create_task(_slow_body(host, int(port), answers)) for _ in range(body_lorises)]
        # Honest senders meanwhile: every event accepted promptly.
        ledger = Ledger()
        waits: list[float] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for n in range(200):
                started = time.monotonic()
                status = await post_event(session, relay.base_url + "/v1/sources/hub/events", f"honest-{n}", ledger)
                waits.append(time.monotonic() - started)
                assert status == 202, (status, ledger.unexpected)
        # Answered as usual; the worst case includes this process opening the lorises' connections meanwhile.
        assert statistics.median(waits) < 0.1, statistics.median(waits)
        assert max(waits) < 2.5, max(waits)
        await asyncio.wait_for(asyncio.gather(*lorises), timeout=30)
        # Headers never finished: the connection is closed after read_timeout (2 s), not held for ever.
        assert len(closed_after) == header_lorises
        assert max(closed_after) < 2 + 3, max(closed_after)
        # A body that trickles: 408 after read_timeout, then the connection is closed.
        assert len(answers) == body_lorises
        assert all(answer.startswith(b"HTTP/1.1 408") for _, answer in answers), answers[0]
        assert max(t for t, _ in answers) < 2 + 3
        # And the relay is still fine.
        async with aiohttp.ClientSession() as session:
            event = orjson.dumps(sample_event("order/synced", "after-lorises"))
            async with session.post(relay.base_url + "/v1/sources/hub/events", data=event, headers=HEADERS) as r:
                assert r.status == 202

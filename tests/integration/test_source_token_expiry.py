"""A polled source's token expiry, as an operator sees it: an SX.e source behind the ION simulator's token
endpoint and `relay serve`; the console's Sources and Overview pages and /metrics show when the token expires,
and the value moves on when the relay renews it."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from helpers import base_config, relay_process, until, write_config

from relay.events import parse_ts
from relay.sim.ion import running_ion_simulator
from relay.sim.sxe import SxeSimulator

ADMIN_TOKEN = "token-expiry-admin-token-0123456789"
SOURCE = "halloran-sxe"
EXPIRY_SERIES = re.compile(r'^relay_source_token_expiry_timestamp_seconds\{source="halloran-sxe"\} (\S+)$', re.M)


async def _expiry_metric(session: aiohttp.ClientSession, base_url: str) -> float | None:
    async with session.get(f"{base_url}/metrics") as resp:
        found = EXPIRY_SERIES.search(await resp.text())
    return float(found[1]) if found else None


async def _sign_in(session: aiohttp.ClientSession, base_url: str) -> None:
    form = await (await session.get(f"{base_url}/ui/signin")).text()
    nonce = re.search(r'name="csrf" value="([^"]+)"', form)
    assert nonce is not None
    resp = await session.post(
        f"{base_url}/ui/signin", data={"csrf": nonce[1], "token": ADMIN_TOKEN, "next": "/ui/"}, allow_redirects=False
    )
    assert resp.status == 303, await resp.text()


async def test_console_and_metrics_show_the_ion_token_expiry_and_its_renewal(tmp_path: Path) -> None:
    sxe = SxeSimulator()
    sxe.seed_rows("apsv", 2)
    # 6 s tokens: the relay renews at half the lifetime (its margin is at most half), so a renewal is seen soon.
    async with running_ion_simulator(token_ttl_s=6) as (ion, ion_url):
        sxe.install(ion)
        ionapi = ion.write_ionapi(tmp_path / "halloran.ionapi", ion_url)
        config = base_config(
            tmp_path,
            admin={"tokens": [ADMIN_TOKEN]},
            sources=[
                {
                    "name": SOURCE,
                    "kind": "sxe",
                    "ionapi_file": str(ionapi),
                    "timezone": "America/Chicago",
                    "feeds": [{"feed": "apsv", "channel": "vendor/synced", "every": "300ms", "jitter": 0}],
                }
            ],
        )
        before_s = time.time()
        with relay_process(write_config(tmp_path, config), tmp_path) as relay:
            await relay.wait_ready()
            jar = aiohttp.CookieJar(unsafe=True)  # the console's cookie is for 127.0.0.1
            async with aiohttp.ClientSession(cookie_jar=jar) as session:
                first: list[float] = []

                async def exported() -> bool:
                    value = await _expiry_metric(session, relay.base_url)
                    if value is not None:
                        first.append(value)
                    return value is not None

                await until(exported, timeout=20)
                # The token the simulator issued lives 6 s from when it was asked for.
                assert before_s + 6 <= first[0] <= time.time() + 6

                await _sign_in(session, relay.base_url)
                sources = await (await session.get(f"{relay.base_url}/ui/sources")).text()
                assert "<th>Token expires</th>" in sources
                shown = re.search(r"<td>([0-9-]+T[0-9:.]+Z) \((in [0-9]+s|expired [0-9]+s ago)\)</td>", sources)
                assert shown is not None, sources
                assert abs(parse_ts(shown[1]).timestamp() - first[0]) < 10

                overview = await (await session.get(f"{relay.base_url}/ui/")).text()
                assert "<th>Token expires</th>" in overview
                expiry_cell = re.search(r'<td title="([^"]+)">(in [0-9]+s|expired [0-9]+s ago)</td>', overview)
                assert expiry_cell is not None, overview
                assert abs(parse_ts(expiry_cell[1]).timestamp() - first[0]) < 10

                # Renewed ahead of expiry: the exported time moves forward, and the page follows.
                renewed: list[float] = []

                async def moved_on() -> bool:
                    value = await _expiry_metric(session, relay.base_url)
                    if value is not None and value > first[0]:
                        renewed.append(value)
                    return bool(renewed)

                await until(moved_on, timeout=20)
                assert ion.token_requests >= 2
                later = await (await session.get(f"{relay.base_url}/ui/sources")).text()
                later_shown = re.search(r"<td>([0-9-]+T[0-9:.]+Z) \(", later)
                assert later_shown is not None
                assert parse_ts(later_shown[1]) > datetime.fromtimestamp(first[0], UTC)

"""GuardedResolver in a real aiohttp client: a name resolving to loopback is refused before any connection.

Only 127.0.0.1 and `localhost` (from /etc/hosts) are used; no external name is resolved.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.guard import BlockedAddressError, GuardedResolver, url_refusal


@pytest.fixture
async def server() -> AsyncIterator[tuple[TestServer, list[str]]]:
    hits: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=200, text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    try:
        yield srv, hits
    finally:
        await srv.close()


def _session(allow: bool, asked: list[str]) -> aiohttp.ClientSession:
    def allow_private_for_host(host: str) -> bool:
        asked.append(host)
        return allow

    # AF_INET: the test server listens on 127.0.0.1 only, whatever `localhost` also maps to.
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(allow_private_for_host), family=socket.AF_INET, use_dns_cache=False
    )
    return aiohttp.ClientSession(connector=connector)


async def test_a_name_resolving_to_loopback_is_refused(server: tuple[TestServer, list[str]]) -> None:
    srv, hits = server
    asked: list[str] = []
    async with _session(False, asked) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await session.post(f"http://localhost:{srv.port}/hook", data=b"{}")
    blocked = info.value.os_error
    assert isinstance(blocked, BlockedAddressError)
    assert "subscriber host localhost resolves only to refused addresses: 127.0.0.1 (loopback)" in str(blocked)
    # What the dispatcher logs, and what aiohttp prints, both name the refusal.
    assert "127.0.0.1 (loopback)" in str(info.value)
    assert asked == ["localhost"]
    assert hits == []


async def test_an_allowed_host_reaches_the_loopback_server(server: tuple[TestServer, list[str]]) -> None:
    srv, hits = server
    asked: list[str] = []
    async with _session(True, asked) as session, session.post(f"http://localhost:{srv.port}/hook", data=b"{}") as resp:
        assert resp.status == 200
        assert await resp.text() == "ok"
    assert asked == ["localhost"]
    assert hits == ["/hook"]


async def test_ip_literals_skip_the_resolver_so_url_refusal_is_the_check(
    server: tuple[TestServer, list[str]],
) -> None:
    srv, hits = server
    url = f"http://127.0.0.1:{srv.port}/literal"
    asked: list[str] = []
    # aiohttp connects to an IP literal without asking the resolver: the URL check must catch it.
    async with _session(False, asked) as session, session.post(url, data=b"{}") as resp:
        assert resp.status == 200
    assert asked == []
    assert hits == ["/literal"]
    assert url_refusal(url, allow_private_network=False) == "127.0.0.1 is loopback"

"""A real webhook receiver on 127.0.0.1 for tests: verifies signatures with `standardwebhooks`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from helpers import WHSEC
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Received:
    event_id: str
    headers: dict[str, str]
    body: bytes
    at: float
    verified: bool
    status: int

    @property
    def payload(self) -> Any:
        return orjson.loads(self.body)


Reply = tuple[int, dict[str, str]] | int
Behaviour = Callable[["Subscriber", web.Request, bytes], Awaitable[Reply] | Reply]


@dataclass
class Subscriber:
    """Answers 200 unless `behaviour` says otherwise; records every request (verified or not)."""

    secrets: list[str] = field(default_factory=lambda: [WHSEC])
    behaviour: Behaviour | None = None
    requests: list[Received] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""

    @property
    def delivered(self) -> list[Received]:
        """Requests answered 2xx."""
        return [r for r in self.requests if 200 <= r.status < 300]

    def delivered_ids(self) -> list[str]:
        return [r.event_id for r in self.delivered]

    def verify(self, body: bytes, headers: dict[str, str], secret: str | None = None) -> bool:
        json_body = headers.get("content-type", "application/json").startswith("application/json")
        for s in [secret] if secret else self.secrets:
            try:
                # XML bodies (format: xml) are verified without the library's JSON parsing of the payload.
                Webhook(s).verify(body, headers, json_parse=json_body) if not json_body else Webhook(s).verify(
                    body, headers
                )
            except WebhookVerificationError:
                continue
            return True
        return False

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        # Recorded on arrival (status -1 until answered): a request the sender gave up on still counts.
        received = Received(
            headers.get("webhook-id", ""), headers, body, time.monotonic(), self.verify(body, headers), -1
        )
        self.requests.append(received)
        status, extra = 200, {}
        if self.behaviour is not None:
            reply = self.behaviour(self, request, body)
            if asyncio.iscoroutine(reply):
                reply = await reply
            status, extra = (reply, {}) if isinstance(reply, int) else reply  # type: ignore[misc]
        received.status = status
        return web.Response(status=status, headers=extra, text="ok" if status < 300 else "no")

    async def start(self, path: str = "/hook") -> str:
        app = web.Application()
        app.router.add_post(path, self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}{path}"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def subscriber_config(name: str, url: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "url": url,
        "secrets": [WHSEC],
        "allow_private_network": True,
        "timeout": "2s",
        "retry": {"schedule": ["100ms", "200ms", "300ms"], "max_age": "1h"},
    }
    base.update(over)
    return base

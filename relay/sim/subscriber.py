"""A local webhook receiver for the demo: verifies every signature, deduplicates on `webhook-id`."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

from relay._net import bound_port
from relay.signing import SignatureError, parse_secret, verify
from relay.sim import SHUTDOWN_GRACE_S

__all__ = ["DemoSubscriber", "ReceivedWebhook"]


@dataclass(frozen=True, slots=True)
class ReceivedWebhook:
    event_id: str
    channel: str
    source: str
    attempt: int
    replay: bool
    verified: bool
    status: int
    body: bytes


@dataclass(eq=False)
class DemoSubscriber:
    """Answers 2xx to verified webhooks; `failure_rate` makes it answer 503 now and then."""

    name: str
    secret: str
    failure_rate: float = 0.0
    seed: int = 1
    received: list[ReceivedWebhook] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)
    on_receive: Callable[[DemoSubscriber, ReceivedWebhook], None] | None = None
    # Answers 500 to bodies this returns True for (a business rule the receiver enforces).
    refuse: Callable[[bytes], bool] | None = None
    url: str = ""
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        self._keys = [parse_secret(self.secret)]
        self._rng = random.Random(self.seed)
        self.failing = False

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(self._keys, request.headers, body, now=datetime.now(UTC))
            verified = True
        except SignatureError:
            verified = False
        status = 401
        if verified:
            status = 503 if self.failing or self._rng.random() < self.failure_rate else 204
            if self.refuse is not None and self.refuse(body):
                status = 500
        item = ReceivedWebhook(
            event_id=request.headers.get("webhook-id", ""),
            channel=request.headers.get("relay-channel", ""),
            source=request.headers.get("relay-source", ""),
            attempt=int(request.headers.get("relay-attempt", "0") or 0),
            replay=request.headers.get("relay-replay") == "true",
            verified=verified,
            status=status,
            body=body,
        )
        self.received.append(item)
        if status < 300:
            self.seen_ids.add(item.event_id)
        if self.on_receive is not None:
            self.on_receive(self, item)
        return web.Response(status=status)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_post("/webhooks", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = bound_port(site)
        self.url = f"http://{host}:{bound}/webhooks"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

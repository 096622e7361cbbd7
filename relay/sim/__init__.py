"""Simulated ERPs and subscribers for tests and the demo."""

from __future__ import annotations

import asyncio

from aiohttp import web

__all__ = ["SHUTDOWN_GRACE_S", "fail_after_create"]

# A stopping simulator gives requests in flight this long, then cancels them: it may be holding one on purpose
# (`hang_s`, a slow lookup) that nobody waits for any more.
SHUTDOWN_GRACE_S = 0.5


async def fail_after_create(request: web.Request, mode: str | None, hang_s: float) -> None:
    """What an ERP does after it created a document on demand: `timeout` never answers (for `hang_s`), `drop`
    closes the connection; None answers normally."""
    if mode == "timeout":
        await asyncio.sleep(hang_s)
    elif mode == "drop":
        assert request.transport is not None
        request.transport.abort()
        raise ConnectionResetError("simulated: connection dropped after the document was created")

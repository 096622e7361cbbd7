"""Small network helpers shared by the daemon, the simulators and the demo."""

from __future__ import annotations

from aiohttp import web


def bound_port(site: web.TCPSite) -> int:
    """The port a started site listens on (useful with port 0)."""
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    if not sockets:
        raise RuntimeError("the site is not listening")
    return int(sockets[0].getsockname()[1])

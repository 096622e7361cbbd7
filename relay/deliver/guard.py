"""SSRF guard: subscriber URLs may not reach loopback, private, link-local or other special addresses.

Literal IPs are checked against the URL; host names are checked by `GuardedResolver` at connect time.
aiohttp connects to exactly the addresses the resolver returns, so the address checked is the address
connected to: a DNS answer that changes between check and connect (rebinding) cannot slip through.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

__all__ = ["BlockedAddressError", "GuardedResolver", "address_refusal", "url_refusal"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]+|\d+)(\.(0x[0-9a-f]+|\d+)){0,3}$", re.IGNORECASE)


class BlockedAddressError(OSError):
    """Every address of a subscriber host is refused by the SSRF guard."""


def address_refusal(ip: IPAddress) -> str | None:
    """Why `ip` may not be a webhook target, or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        for embedded in (ip.ipv4_mapped, ip.sixtofour):
            if embedded is not None:
                reason = address_refusal(embedded)
                return f"{reason} (embedded in IPv6)" if reason else None
        if ip in ipaddress.ip_network("64:ff9b::/96"):
            reason = address_refusal(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
            return f"{reason} (NAT64)" if reason else None
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (cloud metadata)" if str(ip) == "169.254.169.254" else "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "shared address space (CGNAT)"
    if ip.is_private:
        return "private network"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not a public address"
    return None


def url_refusal(url: str, *, allow_private_network: bool) -> str | None:
    """Why `url` may not be a webhook target (scheme, userinfo, literal address), or None."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port
    except ValueError as exc:
        return f"malformed URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return "scheme must be http or https"
    if not host:
        return "the URL has no host"
    if parts.username is not None or parts.password is not None:
        return "credentials in the URL are not allowed; use headers"
    if allow_private_network:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if _NUMERIC_HOST.match(host):
            return "numeric host form not allowed"
        return None
    reason = address_refusal(ip)
    return f"{host} is {reason}" if reason else None


class GuardedResolver(AbstractResolver):
    """Resolves with an inner resolver and drops every refused address unless the host is allowed."""

    def __init__(self, allow_private_for_host: Callable[[str], bool], inner: AbstractResolver | None = None) -> None:
        self._allow = allow_private_for_host
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._allow(host):
            return results
        kept: list[ResolveResult] = []
        refused: list[str] = []
        for result in results:
            reason = address_refusal(ipaddress.ip_address(result["host"]))
            if reason is None:
                kept.append(result)
            else:
                refused.append(f"{result['host']} ({reason})")
        if not kept:
            raise BlockedAddressError(
                f"refused: subscriber host {host} resolves only to refused addresses: {', '.join(refused)}"
            )
        return kept

    async def close(self) -> None:
        await self._inner.close()

    def __getattr__(self, name: str) -> Any:  # pragma: no cover - aiohttp may probe optional attributes
        raise AttributeError(name)

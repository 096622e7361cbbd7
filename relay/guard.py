"""SSRF guard: subscriber URLs may not reach loopback, private, link-local or other special addresses.

Two checks, both needed. `target_refusal` checks the URL itself (scheme, userinfo, IP literals), because
aiohttp connects to an IP-literal host without asking the resolver. It judges the host of the `yarl.URL`
that the client is given (`target_url`), after yarl's normalisation: `http://１２７.０.０.１/` and
`http://127。0。0。1/` are dialled as 127.0.0.1, so they are judged as 127.0.0.1. `GuardedResolver` checks
every address a host name resolves to; aiohttp connects to exactly the addresses the resolver returned,
so the address checked is the address connected to, and a DNS answer that changes between a check and
the connection (rebinding) cannot slip through.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import re
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

__all__ = [
    "BlockedAddressError",
    "GuardedResolver",
    "address_refusal",
    "target_refusal",
    "target_url",
    "url_refusal",
]

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_RFC1918 = (
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv4Network("172.16.0.0/12"),
    ipaddress.IPv4Network("192.168.0.0/16"),
)
_ULA = ipaddress.IPv6Network("fc00::/7")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_METADATA = ipaddress.IPv4Address("169.254.169.254")
# Host forms that libc's inet_aton turns into an address though `ipaddress` rejects them: 2130706433,
# 0x7f.1, 0177.0.0.1, 127.1 (an optional trailing dot as in fully qualified names).
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.?", re.IGNORECASE)
# What a host name may hold once yarl has encoded it (IDNA names arrive as `xn--…`): anything else (spaces,
# `%`, control characters) is no name DNS can answer for, and libc's inet_aton reads `127.0.0.1 x` as
# 127.0.0.1.
_HOST_NAME = re.compile(r"[a-z0-9_.-]+", re.IGNORECASE)


class BlockedAddressError(OSError):
    """Every address of a subscriber host is refused by the SSRF guard.

    Carries its message as `strerror` too, which is what aiohttp shows when it wraps the error in
    `ClientConnectorError`.
    """

    def __init__(self, message: str) -> None:
        """Create the error.

        Args:
            message: names the host and every refused address with its reason.
        """
        super().__init__(errno.EACCES, message)

    def __str__(self) -> str:
        return str(self.strerror)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4"
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    return None


def address_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Say why an address may not be a webhook target.

    Args:
        ip: the address (IPv6 may carry a scope id).

    Returns:
        A short reason (`loopback`, `private network`, `link-local (cloud metadata)`, `multicast`,
        `reserved`, `unspecified`, `shared address space (CGNAT)`, …), or None for a public address. An
        IPv4 address embedded in IPv6 (IPv4-mapped `::ffff:a.b.c.d`, 6to4, NAT64 `64:ff9b::/96`) is
        judged as that IPv4 address.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            inner, form = embedded
            reason = address_refusal(inner)
            return f"{reason} ({form} {inner})" if reason else None
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (cloud metadata)" if ip == _METADATA else "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address):
        if ip in _CGNAT:
            return "shared address space (CGNAT)"
        if any(ip in net for net in _RFC1918):
            return "private network"
    else:
        if ip in _ULA:
            return "private network (unique local)"
        if ip.is_site_local:
            return "site-local"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private or not ip.is_global:
        # Documentation, benchmarking, IETF protocol ranges and the like: never a real subscriber.
        return "special-purpose address"
    return None


def target_url(url: str) -> URL:
    """Build the URL the HTTP client is given, exactly once, so the host judged is the host dialled.

    Args:
        url: the subscriber URL as configured (surrounding whitespace ignored).

    Returns:
        The `yarl.URL`, host normalised the way the client dials it: IDNA and Unicode compatibility forms
        (fullwidth digits, `。`, circled digits) folded to ASCII, IPv6 compressed.

    Raises:
        ValueError: yarl cannot build the URL (bad port, bad brackets, a character IDNA refuses, …).
    """
    return URL(url.strip())


def _numeric_address(host: str) -> ipaddress.IPv4Address | None:
    # The address libc makes of a legacy numeric form (inet_aton also reads 127.1, 0x7f.1, 2130706433).
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))
    except OSError:
        return None


def _host_refusal(host: str, *, allow_private_network: bool) -> str | None:
    if ":" in host:
        # aiohttp hands any host with a colon to the socket as an IPv6 literal, never to the resolver.
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(host.replace("%25", "%", 1))
        except ValueError:
            return f"{host} is not a valid IPv6 address"
    else:
        if not _HOST_NAME.fullmatch(host):
            return f"the host {host!r} has characters a host name cannot have"
        try:
            ip = ipaddress.IPv4Address(host)
        except ValueError:
            # aiohttp dials a host of digits and dots itself, never asking the resolver (1.2.3.4.5, 127.0.0.1..).
            numeric = _NUMERIC_HOST.fullmatch(host.rstrip(".")) or host.replace(".", "").isdigit()
            if allow_private_network or not numeric:
                return None  # a name: `GuardedResolver` judges what it resolves to
            meant = _numeric_address(host)
            reason = address_refusal(meant) if meant is not None else None
            what = f" (it means {meant}, {reason})" if reason else (f" (it means {meant})" if meant else "")
            return f"numeric host form not allowed{what}; write the address as a.b.c.d"
    if allow_private_network:
        return None
    reason = address_refusal(ip)
    return f"{ip} is {reason}" if reason else None


# Checked before every attempt and pure in its arguments; subscribers are few, so the answers are kept.
@functools.lru_cache(maxsize=1024)
def target_refusal(url: URL, *, allow_private_network: bool) -> str | None:
    """Say why a URL built by `target_url` may not be a webhook target, without resolving any name.

    The host judged is `url.raw_host`, the host the client dials after yarl's normalisation.

    Args:
        url: the URL the client will be given.
        allow_private_network: when True, IP literals and numeric host forms are not checked (the scheme,
            host and userinfo rules still apply).

    Returns:
        A reason when the scheme is not http or https, the host is missing or holds characters no host
        name has, the URL carries credentials, the host is a refused IP literal in any spelling (bracketed
        IPv6 and IPv4-mapped forms included), or the host is a numeric form such as `2130706433`,
        `0x7f.1`, `0177.0.0.1` or `127.0.0.1.`; otherwise None. Host names pass: `GuardedResolver` checks
        them at connect time. The reason never repeats credentials.
    """
    if url.scheme not in ("http", "https"):
        return "scheme must be http or https"
    if url.raw_user is not None or url.raw_password is not None:
        return "credentials in the URL are not allowed; configure headers instead"
    host = url.raw_host
    if not host:
        return "the URL has no host"
    return _host_refusal(host, allow_private_network=allow_private_network)


def url_refusal(url: str, *, allow_private_network: bool) -> str | None:
    """Say why a URL may not be a webhook target, without resolving any name.

    Args:
        url: the subscriber URL.
        allow_private_network: as for `target_refusal`.

    Returns:
        `malformed URL` when `target_url` cannot build it, else what `target_refusal` says of the URL the
        client would be given.
    """
    try:
        target = target_url(url)
    except ValueError:
        # yarl's own message may quote the URL; this one never repeats credentials.
        with contextlib.suppress(ValueError):
            if urlsplit(url.strip()).scheme in ("http", "https") and not urlsplit(url.strip()).hostname:
                return "the URL has no host"
        return "malformed URL"
    return target_refusal(target, allow_private_network=allow_private_network)


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that drops refused addresses, unless the host may reach private networks.

    Use it as `TCPConnector(resolver=GuardedResolver(...))`; also check `target_refusal` first, since aiohttp
    does not consult the resolver for IP-literal hosts.
    """

    def __init__(self, allow_private_for_host: Callable[[str], bool], inner: AbstractResolver | None = None) -> None:
        """Wrap a resolver.

        Args:
            allow_private_for_host: called with the host name; True lets every resolved address through.
            inner: the resolver that does the lookup; default aiohttp's `DefaultResolver`, created on first
                use (it needs a running event loop).
        """
        self._allow_private_for_host = allow_private_for_host
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve `host` with the inner resolver and keep only the addresses that may be connected to.

        Args:
            host: the host name.
            port: the port.
            family: the address family asked for.

        Returns:
            The inner resolver's results minus refused addresses (all of them when the host is allowed).

        Raises:
            BlockedAddressError: every address was refused; the message names the host, each address and
                the reason.
            OSError: the inner resolver failed.
        """
        if self._inner is None:
            self._inner = DefaultResolver()
        results = await self._inner.resolve(host, port, family)
        kept: list[ResolveResult] = []
        refused: list[str] = []
        for result in results:
            try:
                reason = address_refusal(ipaddress.ip_address(result["host"]))
            except ValueError:
                reason = "not an IP address"
            if reason is None:
                kept.append(result)
            else:
                refused.append(f"{result['host']} ({reason})")
        if not refused or self._allow_private_for_host(host):
            return results
        if not kept:
            raise BlockedAddressError(
                f"subscriber host {host} resolves only to refused addresses: {', '.join(refused)}"
            )
        return kept

    async def close(self) -> None:
        """Close the inner resolver."""
        if self._inner is not None:
            await self._inner.close()

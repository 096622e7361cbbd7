"""SSRF guard: which subscriber URLs and addresses are refused, and why (no name is resolved here)."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from relay.guard import (
    BlockedAddressError,
    GuardedResolver,
    address_refusal,
    target_refusal,
    target_url,
    url_refusal,
)

REFUSED_ADDRESSES = {
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "10.0.0.1": "private network",
    "172.16.5.4": "private network",
    "192.168.1.1": "private network",
    "169.254.169.254": "link-local (cloud metadata)",
    "169.254.1.1": "link-local",
    "0.0.0.0": "unspecified",
    "224.0.0.1": "multicast",
    "100.64.0.1": "shared address space (CGNAT)",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "192.0.2.1": "special-purpose address",
    "::1": "loopback",
    "::": "unspecified",
    "fe80::1": "link-local",
    "fe80::1%eth0": "link-local",
    "fc00::1": "private network (unique local)",
    "fd12:3456::1": "private network (unique local)",
    "fec0::1": "site-local",
    "ff02::1": "multicast",
    "2001:db8::1": "special-purpose address",
    "::ffff:127.0.0.1": "loopback (IPv4-mapped 127.0.0.1)",
    "::ffff:10.0.0.1": "private network (IPv4-mapped 10.0.0.1)",
    "::ffff:169.254.169.254": "link-local (cloud metadata) (IPv4-mapped 169.254.169.254)",
    "2002:7f00:1::": "loopback (6to4 127.0.0.1)",
    "2002:a9fe:a9fe::1": "link-local (cloud metadata) (6to4 169.254.169.254)",
    "64:ff9b::a00:1": "private network (NAT64 10.0.0.1)",
}

PUBLIC_ADDRESSES = ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:93.184.216.34", "64:ff9b::808:808"]


@pytest.mark.parametrize(("address", "reason"), REFUSED_ADDRESSES.items())
def test_address_refusal_names_the_reason(address: str, reason: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


REFUSED_URLS = {
    "http://127.0.0.1/hook": "127.0.0.1 is loopback",
    "http://10.0.0.1:8080/": "10.0.0.1 is private network",
    "https://172.16.5.4/": "172.16.5.4 is private network",
    "http://192.168.1.1/": "192.168.1.1 is private network",
    "http://169.254.169.254/latest/meta-data/": "169.254.169.254 is link-local (cloud metadata)",
    "http://[::1]/": "::1 is loopback",
    "http://[::1]:9000/x": "::1 is loopback",
    "http://[fe80::1]/": "fe80::1 is link-local",
    "http://[fe80::1%25eth0]/": "is link-local",
    "http://[fc00::1]/": "fc00::1 is private network (unique local)",
    "http://[::ffff:10.0.0.1]/": "is private network (IPv4-mapped 10.0.0.1)",
    "http://[::ffff:7f00:1]/": "is loopback (IPv4-mapped 127.0.0.1)",
    "http://0.0.0.0/": "0.0.0.0 is unspecified",
    "http://224.0.0.1/": "224.0.0.1 is multicast",
    "http://100.64.0.1/": "100.64.0.1 is shared address space (CGNAT)",
    "http://2130706433/": "numeric host form not allowed",
    "http://0x7f.1/": "numeric host form not allowed",
    "http://0x7f000001/": "numeric host form not allowed",
    "http://0177.0.0.1/": "numeric host form not allowed",
    "http://127.1/": "numeric host form not allowed",
    "http://127.0.0.1./": "numeric host form not allowed",
    "ftp://example.com/": "scheme must be http or https",
    "file:///etc/passwd": "scheme must be http or https",
    "example.com/hook": "scheme must be http or https",
    "http://user:pw@example.com/": "credentials in the URL are not allowed",
    "http://user@example.com/": "credentials in the URL are not allowed",
    "http:///hook": "the URL has no host",
    "http://:8080/": "the URL has no host",
    "http://example.com:99999/": "malformed URL",
    "http://[::1/": "malformed URL",
}


@pytest.mark.parametrize(("url", "reason"), REFUSED_URLS.items())
def test_url_refusal(url: str, reason: str) -> None:
    refusal = url_refusal(url, allow_private_network=False)
    assert refusal is not None
    assert reason in refusal


def test_url_refusal_never_repeats_credentials() -> None:
    refusal = url_refusal("http://admin:hunter2@example.com/", allow_private_network=True)
    assert refusal is not None
    assert "hunter2" not in refusal


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/hook",
        "https://[2606:4700::1111]/hook",
        "https://example.com",
        "https://example.com:8443/hooks/erp?x=1",
        "HTTPS://Example.COM/",
        "https://localhost/",  # a name: GuardedResolver checks it at connect time
        "https://1password.com/",
        "https://123.example/",
    ],
)
def test_url_refusal_passes_public_targets_and_names(url: str) -> None:
    assert url_refusal(url, allow_private_network=False) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://100.64.0.1/",
        "http://2130706433/",
        "http://0x7f.1/",
    ],
)
def test_allow_private_network_lets_private_targets_pass(url: str) -> None:
    assert url_refusal(url, allow_private_network=True) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "scheme"),
        ("http://user:pw@example.com/", "credentials"),
        ("http:///x", "no host"),
    ],
)
def test_allow_private_network_keeps_the_other_rules(url: str, reason: str) -> None:
    refusal = url_refusal(url, allow_private_network=True)
    assert refusal is not None
    assert reason in refusal


# ------------------------------------------------------------------------------------------ resolver


class FakeResolver(AbstractResolver):
    """Answers from a table, so the filtering is tested without any DNS."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        self.closed = True


ANSWERS = {
    "public.test": ["93.184.216.34", "2606:4700::1111"],
    "mixed.test": ["10.0.0.7", "93.184.216.34", "::1"],
    "internal.test": ["127.0.0.1", "169.254.169.254", "fd00::5"],
}


async def test_resolver_keeps_public_addresses() -> None:
    resolver = GuardedResolver(lambda host: False, FakeResolver(ANSWERS))
    results = await resolver.resolve("public.test", 443)
    assert [r["host"] for r in results] == ["93.184.216.34", "2606:4700::1111"]
    assert all(r["port"] == 443 for r in results)


async def test_resolver_drops_refused_addresses_from_a_mixed_answer() -> None:
    resolver = GuardedResolver(lambda host: False, FakeResolver(ANSWERS))
    assert [r["host"] for r in await resolver.resolve("mixed.test", 80)] == ["93.184.216.34"]


async def test_resolver_refuses_a_host_with_only_refused_addresses() -> None:
    resolver = GuardedResolver(lambda host: False, FakeResolver(ANSWERS))
    with pytest.raises(BlockedAddressError) as info:
        await resolver.resolve("internal.test", 80)
    assert str(info.value) == (
        "subscriber host internal.test resolves only to refused addresses: 127.0.0.1 (loopback), "
        "169.254.169.254 (link-local (cloud metadata)), fd00::5 (private network (unique local))"
    )
    assert isinstance(info.value, OSError)
    assert info.value.strerror == str(info.value)


async def test_resolver_lets_everything_through_for_an_allowed_host() -> None:
    asked: list[str] = []

    def allow(host: str) -> bool:
        asked.append(host)
        return host == "internal.test"

    resolver = GuardedResolver(allow, FakeResolver(ANSWERS))
    results = await resolver.resolve("internal.test", 80)
    assert [r["host"] for r in results] == ANSWERS["internal.test"]
    assert [r["host"] for r in await resolver.resolve("mixed.test", 80)] == ["93.184.216.34"]
    assert asked == ["internal.test", "mixed.test"]


async def test_resolver_closes_its_inner_resolver() -> None:
    inner = FakeResolver(ANSWERS)
    await GuardedResolver(lambda host: False, inner).close()
    assert inner.closed


# ------------------------------------------------------------------------------- spellings of a host

# Each spelling reaches a refused address: yarl folds Unicode forms to ASCII before the client dials, and
# libc reads legacy numeric forms as addresses. The guard judges what is dialled, so each is refused.
REFUSED_SPELLINGS = {
    "http://１２７.０.０.１:18081/x": "127.0.0.1 is loopback",  # fullwidth digits
    "http://１２７．０．０．１/": "127.0.0.1 is loopback",  # fullwidth digits and full stops
    "http://127。0。0。1:18081/x": "127.0.0.1 is loopback",  # ideographic full stop
    "http://127｡0｡0｡1/": "127.0.0.1 is loopback",  # halfwidth ideographic full stop
    "http://①②⑦.0.0.1:18081/x": "127.0.0.1 is loopback",  # circled digits
    "http://127.0.0.１/": "127.0.0.1 is loopback",
    "http://⑯⑨.254.169.254/latest/meta-data": "169.254.169.254 is link-local (cloud metadata)",
    "http://１０.０.０.１/": "10.0.0.1 is private network",
    "http://２１３０７０６４３３/": "numeric host form not allowed (it means 127.0.0.1, loopback)",
    "http://０ｘ７ｆ.１/": "numeric host form not allowed (it means 127.0.0.1, loopback)",
    "http://2130706433/": "numeric host form not allowed (it means 127.0.0.1, loopback)",
    "http://0177.0.0.1/": "numeric host form not allowed (it means 127.0.0.1, loopback)",
    "http://0x7f.1/": "numeric host form not allowed (it means 127.0.0.1, loopback)",
    "http://0X7F.0.0.1/": "numeric host form not allowed (it means 127.0.0.1, loopback)",
    "http://0x7f000001/": "numeric host form not allowed (it means 127.0.0.1, loopback)",
    "http://127.0.0.0x1/": "numeric host form not allowed (it means 127.0.0.1, loopback)",
    "http://127.000.000.001/": "numeric host form not allowed (it means 127.0.0.1, loopback)",
    "http://127.0.0.1./": "numeric host form not allowed (it means 127.0.0.1, loopback)",
    "http://127.0.0.1../": "numeric host form not allowed (it means 127.0.0.1, loopback)",
    "http://0/": "numeric host form not allowed (it means 0.0.0.0, unspecified)",
    "http://012.0.0.1/": "numeric host form not allowed (it means 10.0.0.1, private network)",
    "http://1.2.3.4.5/": "numeric host form not allowed",
    "http://4294967296/": "numeric host form not allowed",
    "http://[::ffff:127.0.0.1]/": "is loopback (IPv4-mapped 127.0.0.1)",
    "http://[0:0:0:0:0:ffff:7f00:1]/": "is loopback (IPv4-mapped 127.0.0.1)",
    "http://[0000:0000::0001]/": "::1 is loopback",
    "http://[::1%25lo]:9/": "is loopback",
    "http://[::127.0.0.1]/": "is reserved",
    "http://%31%32%37.0.0.1/": "characters a host name cannot have",
    "http://127.0.0.1%00/": "characters a host name cannot have",
    "http://127.0.0.1 x/": "characters a host name cannot have",
    "http://[：：１]/": "malformed URL",
}


@pytest.mark.parametrize(("url", "reason"), REFUSED_SPELLINGS.items())
def test_every_spelling_of_a_refused_address_is_refused(url: str, reason: str) -> None:
    refusal = url_refusal(url, allow_private_network=False)
    assert refusal is not None
    assert reason in refusal


@pytest.mark.parametrize(("url", "dialled"), [(u, "127.0.0.1") for u in list(REFUSED_SPELLINGS)[:6]])
def test_the_judged_host_is_the_host_the_client_is_given(url: str, dialled: str) -> None:
    target = target_url(url)
    assert target.raw_host == dialled
    assert target_refusal(target, allow_private_network=False) == f"{dialled} is loopback"


@pytest.mark.parametrize(
    "url",
    [
        "http://９３.１８４.２１６.３４/hook",
        "https://ｅｘａｍｐｌｅ.com/",
        "https://bücher.example/",
        "http://ｌｏｃａｌｈｏｓｔ/",
    ],
)
def test_unicode_spellings_of_public_addresses_and_names_pass(url: str) -> None:
    assert url_refusal(url, allow_private_network=False) is None


@pytest.mark.parametrize(
    "url", ["http://１２７.０.０.１:18081/x", "http://127。0。0。1/", "http://0x7f.1/", "http://[::1]/"]
)
def test_allow_private_network_lets_every_spelling_pass(url: str) -> None:
    assert url_refusal(url, allow_private_network=True) is None


@pytest.mark.parametrize("url", ["http://127.0.0.1%00/", "http://exa mple.com/", "http://%6c%6f%63%61%6c%68%6f%73%74/"])
def test_hosts_no_name_can_have_are_refused_even_when_private_targets_are_allowed(url: str) -> None:
    refusal = url_refusal(url, allow_private_network=True)
    assert refusal is not None
    assert "characters a host name cannot have" in refusal

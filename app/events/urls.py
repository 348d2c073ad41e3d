"""Where a webhook may be posted (README, Events): `https`, and never to a private,
loopback, link-local or otherwise non-public address, checked on every address the host
name resolves to, when the endpoint is saved and again before each post (a name may be
pointed elsewhere later): before each post, the name is resolved once, where the
connection is made (`PublicOnly`), and the connection made to an address so checked, so a
name pointed elsewhere between a check and the connection gets nowhere.
`EVENTS_ALLOW_PRIVATE_URLS=true` lifts both rules, for development and tests."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore

RESOLVE_SECONDS = 5.0


class RefusedUrl(ValueError):
    """A URL events may not be posted to; `str(exc)` says why, for the caller."""


# IPv6 prefixes that carry an IPv4 address in their last 32 bits: RFC 6052's NAT64
# prefixes, which a translator reaches, the IPv4-compatible addresses (`::/96`, RFC 4291,
# deprecated) and the IPv4-translated ones (`::ffff:0:0:0/96`, RFC 2765), which a host may
# still route to that IPv4 address: public only if that address is (`::` and `::1` are
# neither, and so refused).
_IPV4_INSIDE = (
    ipaddress.ip_network("64:ff9b::/96"),
    ipaddress.ip_network("64:ff9b:1::/48"),
    ipaddress.ip_network("::/96"),
    ipaddress.ip_network("::ffff:0:0:0/96"),
)


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if not (ip.is_global and not ip.is_multicast):
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address inside (mapped, 6to4, Teredo's server and client, and those of
        # _IPV4_INSIDE) must be public too.
        inside = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if any(ip in net for net in _IPV4_INSIDE):
            inside.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        return all(_public(str(v4)) for v4 in inside if v4 is not None)
    return True


def shape(url: str, *, allow_private: bool) -> str:
    """The URL's host, once the URL has the shape a webhook needs; else RefusedUrl."""
    parts = urlsplit(url)
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise RefusedUrl("the URL must use https")
    if not parts.hostname:
        raise RefusedUrl("the URL has no host")
    if parts.username or parts.password:
        raise RefusedUrl("the URL must not carry credentials")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as exc:
        raise RefusedUrl("the URL's port is not valid") from exc
    return parts.hostname


async def check(url: str, *, allow_private: bool) -> None:
    """Refuse (RefusedUrl) a URL events may not be posted to, resolving its host."""
    host = shape(url, allow_private=allow_private)
    if not allow_private:
        await public_addresses(host)


async def public_addresses(host: str) -> list[str]:
    """The addresses `host` resolves to, when every one of them is public; else
    RefusedUrl."""
    try:
        async with asyncio.timeout(RESOLVE_SECONDS):
            found = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
    except (OSError, UnicodeError, TimeoutError) as exc:
        raise RefusedUrl(f"the host {host!r} does not resolve") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    private = sorted(a for a in addresses if not _public(a))
    if private or not addresses:
        raise RefusedUrl(
            f"the host {host!r} resolves to an address that is not public ({', '.join(private)})"
        )
    return addresses


class PublicOnly(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects to public addresses only: it resolves the
    host itself, refuses it (RefusedUrl) unless every address is public, and connects to
    those addresses, in turn until one answers. TLS still checks the certificate against
    the host's name (httpcore passes it as the server name)."""

    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failed: httpcore.ConnectError | None = None
        for address in await public_addresses(host):
            try:
                return await self._backend.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                failed = exc
        assert failed is not None
        raise failed

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedUrl("events are posted over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)

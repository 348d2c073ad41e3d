"""Where a webhook may be posted (README, Events): `https`, and never to a private,
loopback, link-local or otherwise non-public address, checked on every address the host
name resolves to, when the endpoint is saved and again before each post (a name may be
pointed elsewhere later). `EVENTS_ALLOW_PRIVATE_URLS=true` lifts both rules, for
development and tests."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class RefusedUrl(ValueError):
    """A URL events may not be posted to; `str(exc)` says why, for the caller."""


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


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
    if allow_private:
        return
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise RefusedUrl(f"the host {host!r} does not resolve") from exc
    addresses = {str(info[4][0]) for info in found}
    private = sorted(a for a in addresses if not _public(a))
    if private or not addresses:
        raise RefusedUrl(
            f"the host {host!r} resolves to an address that is not public ({', '.join(private)})"
        )

"""The shared outbound HTTP client: every provider API call goes through it.

Its connections are split over several pools, taken in turn. httpcore's pool does work
proportional to its connections on every request (`_assign_requests_to_connections` walks
them all, polling the socket of each idle one), and its default keep-alive limit (20) is
below the delivery worker's concurrency (50), so one pool either closes and reopens a
connection for most requests or, with a higher limit, walks 50 connections per request.
Ten pools each hold about concurrency / 10 connections, kept alive: measured against a
local fake Twilio answering in 20 ms at concurrency 50 (bench/dispatch.py), a plain loop
went from about 500 to 800 creates/s and the client's CPU per create from about 1.8 to
1.1 ms; 5 pools gained less, 25 no more. A better-configured single pool does not help
(keep-alive 50: 240/s, the walk dominates).

Each pool keeps alive every connection it may hold (`LIMITS`). httpcore 1.0 closes an idle
connection whenever its pool holds more connections than the keep-alive limit, counting
the busy ones too (`AsyncConnectionPool._assign_requests_to_connections` compares
`len([c.is_idle() for c in connections])`, the length of a list of all of them). In a
provider brownout the pools fill with requests hanging until their timeout (the engine's
stragglers, `app.delivery.gate`), so with the default limit of 20 nearly every answered
request closed its connection and the next opened one (bench/dispatch.py --hang-share
0.05: 3,300 to 7,300 connections for 20,000 creates, 1,013 of them hanging; 1,048 with
this). Idle connections still go after `keepalive_expiry` (5 s).
"""

from __future__ import annotations

import itertools

import httpcore
import httpx

POOLS = 10
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# Per pool: httpx's default cap on connections, every one of them kept alive (above).
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100)


class SplitPool(httpx.AsyncBaseTransport):
    """Round-robin over `pools` transports, each with its own connection pool (`LIMITS`:
    the engine's concurrency gate bounds the requests in flight)."""

    def __init__(
        self, pools: int = POOLS, network_backend: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self._transports = [httpx.AsyncHTTPTransport(limits=LIMITS) for _ in range(pools)]
        if network_backend is not None:
            # httpx's transport does not take one; the httpcore pool it wraps does, and
            # uses it for each connection it opens.
            for transport in self._transports:
                transport._pool._network_backend = network_backend
        self._turn = itertools.cycle(self._transports)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await next(self._turn).handle_async_request(request)

    async def aclose(self) -> None:
        for transport in self._transports:
            await transport.aclose()


def outbound_client() -> httpx.AsyncClient:
    """The client the service and the worker share for provider calls (short timeouts)."""
    return httpx.AsyncClient(timeout=TIMEOUT, transport=SplitPool())

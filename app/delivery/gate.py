"""The send gate: how many sends a worker has in flight.

At most `WORKER_CONCURRENCY` sends run at once. A send still unanswered after
`WORKER_STRAGGLING_SECONDS` (a provider that hangs until the client's timeout, as in a brownout)
steps aside: it gives its place to the next send and waits on among the stragglers, who
have a bound of their own (`STRAGGLERS_PER_PLACE` for each place), so a few hanging
numbers cost their own time, not everyone's. When the stragglers are full, a slow send
keeps its place, as every send did before. Work in flight stays bounded by both.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

T = TypeVar("T")

# Stragglers a place may have: a share S of sends hanging for a timeout T (less the
# WORKER_STRAGGLING_SECONDS they keep their place) holds R x S x T of them at R sends a
# second. At 8 a place (400 at concurrency 50) a 5% brownout with the 10 s timeout
# (app.kit.http.TIMEOUT) leaves room for about 840 msg/s (bench/dispatch.py --hang-share,
# "ceiling:"); at 4 it left about 440, half a clean run.
STRAGGLERS_PER_PLACE = 8


class Place:
    """A send's place in the gate, given up for a straggler's if its answer is late."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate
        self._straggling = False

    async def answer(self, call: Awaitable[T]) -> T:
        """The answer of `call`, its place given to the next send if it straggles. (A timer
        beside the call, not a task around it: most sends answer long before it fires,
        and a task and a wait for each would cost every send their CPU.)"""
        timer = asyncio.get_running_loop().call_later(self._gate.straggling_after, self._step_aside)
        try:
            return await call
        finally:
            timer.cancel()

    def _step_aside(self) -> None:
        """Still unanswered: wait on among the stragglers, if there is room among them."""
        gate = self._gate
        if not self._straggling and gate._straggling < gate.stragglers:
            gate._straggling += 1
            self._straggling = True
            gate._places.release()

    def release(self) -> None:
        if self._straggling:
            self._gate._straggling -= 1
        else:
            self._gate._places.release()


class Gate:
    def __init__(self, concurrency: int, straggling_after: float) -> None:
        self.concurrency = concurrency
        self.stragglers = STRAGGLERS_PER_PLACE * concurrency
        self.straggling_after = straggling_after
        self._places = asyncio.Semaphore(concurrency)
        self._straggling = 0  # sends waiting on among the stragglers (never waited for)

    @property
    def bound(self) -> int:
        """The most sends in flight at once, stragglers included."""
        return self.concurrency + self.stragglers

    @asynccontextmanager
    async def place(self) -> AsyncIterator[Place]:
        """Wait for a place; held until the send is answered (or gives up)."""
        await self._places.acquire()
        place = Place(self)
        try:
            yield place
        finally:
            place.release()

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

STRAGGLERS_PER_PLACE = 4


class Place:
    """A send's place in the gate, given up for a straggler's if its answer is late."""

    def __init__(
        self, place: asyncio.Semaphore, stragglers: asyncio.Semaphore, straggling_after: float
    ) -> None:
        self._held = place
        self._stragglers = stragglers
        self._straggling_after = straggling_after

    async def answer(self, call: Awaitable[T]) -> T:
        """The answer of `call`, its place given to the next send if it straggles."""
        task = asyncio.ensure_future(call)
        try:
            done, _ = await asyncio.wait({task}, timeout=self._straggling_after)
            stragglers = self._stragglers
            if not done and not stragglers.locked():
                await stragglers.acquire()  # free: no wait
                self._held.release()
                self._held = stragglers
            return await task
        except BaseException:
            task.cancel()
            raise

    def release(self) -> None:
        self._held.release()


class Gate:
    def __init__(self, concurrency: int, straggling_after: float) -> None:
        self.concurrency = concurrency
        self.stragglers = STRAGGLERS_PER_PLACE * concurrency
        self.straggling_after = straggling_after
        self._places = asyncio.Semaphore(concurrency)
        self._stragglers = asyncio.Semaphore(self.stragglers)

    @property
    def bound(self) -> int:
        """The most sends in flight at once, stragglers included."""
        return self.concurrency + self.stragglers

    @asynccontextmanager
    async def place(self) -> AsyncIterator[Place]:
        """Wait for a place; held until the send is answered (or gives up)."""
        await self._places.acquire()
        place = Place(self._places, self._stragglers, self.straggling_after)
        try:
            yield place
        finally:
            place.release()

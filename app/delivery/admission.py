"""The last check before a hand-over starts: is its recipient still waiting for it?

A claim commits before its messages go out, and a batch's sends can take a while to
start (the concurrency gate, a provider's rate). Meanwhile staff may close or archive the
campaign, or the number may opt out. README, Delivery: no attempt starts after the call returns.

So every send is admitted first, against the database, under an advisory lock per
campaign, held shared from before the recipient is read until the provider has answered
the send; a stop (`hold_back_sends`: close, archive, a staff or keyword opt-out) takes it
exclusively in its own transaction. A stop therefore waits for the sends of its campaign
in flight (at most the provider's timeout), and every admission after it sees what it
committed: once it returns, nothing it stopped is being sent or will be.

An admission never waits for a lock (`pg_try_advisory_lock_shared`; a stop waiting for
one makes it fail too, also where this connection holds it already for other sends): it
tries again shortly, so a stop is never queued behind new sends, and a worker told to
stop is never stuck. Admissions and releases that overlap share one round of statements,
so a busy worker makes a few per batch rather than several per message.

The batches a worker has in flight share one connection for their admissions
(`Admissions`), rather than one each: in a provider brownout a batch with a send hanging
until its timeout lasts that long, so a worker has many batches in flight at once, and a
connection for each would take the pool's connections from the claims and the records
(and split the rounds, each batch's sends into rounds of their own). The connection is
held while any batch is sending and given back when none is. The locks are the
connection's session's: the connection is closed rather than given back to the pool if
any could still be held; after a failure the batches that start get a new one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from app.delivery import sql
from app.kit.db import unit_of_work
from app.sending.locks import lock_key

log = logging.getLogger(__name__)

# How long an admission whose campaign's lock a stop holds (or waits for) waits to retry.
RETRY_SECONDS = 0.01


@dataclass(frozen=True, slots=True)
class Candidate:
    recipient_id: int
    campaign_id: uuid.UUID
    claim: uuid.UUID

    @property
    def key(self) -> int:
        return lock_key(self.campaign_id)


_Waiting = tuple[Candidate, "asyncio.Future[bool | None]"]


class Admissions:
    """A worker's admissions: the batches in flight share one `Admission`, on one
    connection, held while any of them is sending (`batch`)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._current: _Shared | None = None
        self._opening = asyncio.Lock()

    @asynccontextmanager
    async def batch(self, stopping: asyncio.Event) -> AsyncIterator[BatchAdmission]:
        """The admissions of one batch's sends, until its send step ends; admitting nothing
        once `stopping` is set."""
        shared = await self._join()
        try:
            yield BatchAdmission(shared.admission, stopping)
        finally:
            await self._leave(shared)

    async def _join(self) -> _Shared:
        async with self._opening:
            shared = self._current
            if shared is None or shared.admission.closed:
                # (closed: its connection failed; its batches finish with it)
                stack = AsyncExitStack()
                try:
                    # A unit of work that writes nothing: committing it leaves a test's
                    # enclosing transaction as it was.
                    session = await stack.enter_async_context(unit_of_work(self._sessionmaker))
                    shared = _Shared(Admission(await session.connection()), stack)
                except BaseException:
                    await stack.aclose()
                    raise
                self._current = shared
            shared.batches += 1
            return shared

    async def _leave(self, shared: _Shared) -> None:
        shared.batches -= 1
        if shared.batches:
            return
        if self._current is shared:
            self._current = None  # the next batch takes a connection of its own
        try:
            await shared.admission.finish()
        finally:
            await shared.stack.aclose()


@dataclass
class _Shared:
    admission: Admission
    stack: AsyncExitStack  # the connection's unit of work
    batches: int = 0


@dataclass(frozen=True, slots=True)
class BatchAdmission:
    """One batch's view of the shared `Admission`."""

    admission: Admission
    stopping: asyncio.Event

    async def admit(self, candidate: Candidate) -> bool:
        """Whether the send may start; if so, the caller starts it at once and `release`s
        it once answered."""
        return await self.admission.admit(candidate, self.stopping)

    def release(self, candidate: Candidate) -> None:
        self.admission.release(candidate)


@dataclass
class Admission:
    """Admits sends on a connection of its own, outside any transaction: `admit` before a
    send; `release` once the provider has answered it; `finish` when no more will come."""

    connection: AsyncConnection
    _waiting: list[_Waiting] = field(default_factory=list)
    _released: list[int] = field(default_factory=list)  # keys to let go
    _held: Counter[int] = field(default_factory=Counter)
    _round: asyncio.Task[None] | None = None
    _closed: bool = False  # admits nothing more
    _discarded: bool = False  # the connection is closed

    @property
    def closed(self) -> bool:
        """Admits nothing more (finished, or its connection failed)."""
        return self._closed

    async def admit(self, candidate: Candidate, stopping: asyncio.Event) -> bool:
        """Whether the send may start; if so, the caller starts it at once and `release`s
        it once answered. Never once `stopping` is set."""
        while not self._closed and not stopping.is_set():
            decision: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
            self._waiting.append((candidate, decision))
            self._start_round()
            admitted = await decision
            if admitted is not None:
                return admitted
            await asyncio.sleep(RETRY_SECONDS)  # a stop holds the campaign's lock: it waits
        return False

    def release(self, candidate: Candidate) -> None:
        self._released.append(candidate.key)
        self._start_round()

    async def finish(self) -> None:
        """Admit nothing more, let every lock go, and leave the connection clean for the
        caller to give back (closed instead, if that could not be made sure of)."""
        self._closed = True
        self._start_round()
        try:
            while self._round is not None:
                await asyncio.shield(self._round)
        finally:
            if self._round is not None or +self._held:
                if +self._held:
                    log.error("admission locks held at the end of a batch: %s", +self._held)
                await self._discard()

    def _start_round(self) -> None:
        if self._round is None and (self._waiting or self._released):
            self._round = asyncio.create_task(self._rounds())

    async def _rounds(self) -> None:
        try:
            while self._waiting or self._released:
                waiting, self._waiting = self._waiting, []
                released, self._released = self._released, []
                await self._one_round(waiting, released)
        except BaseException:
            await self._discard()
            raise
        finally:
            self._round = None
            _refuse(self._waiting)  # never left waiting, whatever happened
            self._waiting = []

    async def _one_round(self, waiting: list[_Waiting], released: list[int]) -> None:
        if self._discarded:
            _refuse(waiting)
            return
        keys = [c.key for c, _ in waiting]
        try:
            raw = await self.connection.get_raw_connection()
            driver: asyncpg.Connection = raw.driver_connection
            self._held.subtract(released)
            held = [key for key, count in self._held.items() if count > 0]
            found = await driver.fetchrow(sql.ADMISSION_LOCKS, released, keys, held)
            locked = found["locked"]
            self._held.update(key for key, ok in zip(keys, locked, strict=True) if ok)
            tried = [c for (c, _), ok in zip(waiting, locked, strict=True) if ok]
            rows = []
            if tried:
                rows = await driver.fetch(
                    sql.STILL_WAITING, [c.recipient_id for c in tried], [c.claim for c in tried]
                )
        except Exception:
            # Not sent now: released unsent by the record, due again at once.
            log.exception("admitting %d sends failed; they are released unsent", len(waiting))
            await self._discard()
            _refuse(waiting)
            return
        still = {row["id"] for row in rows}
        for (candidate, decision), locked_now in zip(waiting, locked, strict=True):
            admitted = locked_now and candidate.recipient_id in still
            if locked_now and (not admitted or decision.done()):
                self._released.append(candidate.key)  # not sent: its lock goes next round
            if not decision.done():  # (done: its send was cancelled)
                decision.set_result(admitted if locked_now else None)

    async def _discard(self) -> None:
        """Close the connection (its session's locks go with it): admit nothing more."""
        self._closed = self._discarded = True
        self._held.clear()
        self._released.clear()
        try:
            await self.connection.invalidate()
        except Exception:
            log.exception("closing the admission connection failed")


def _refuse(waiting: list[_Waiting]) -> None:
    for _, decision in waiting:
        if not decision.done():
            decision.set_result(False)

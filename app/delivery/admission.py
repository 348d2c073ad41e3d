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
stop is never stuck. Admissions and releases that overlap share one round of statements
on the batch's connection, so a busy worker makes a few per batch rather than several
per message. The locks are the connection's session's: the connection is closed rather
than given back to the pool if any could still be held.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

from app.delivery import sql
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


@dataclass
class Admission:
    """Admits the sends of one batch, on a connection of its own, outside any transaction.
    `admit` before a send; `release` once the provider has answered it; `finish` when the
    batch is done."""

    connection: AsyncConnection
    stopping: asyncio.Event
    _waiting: list[_Waiting] = field(default_factory=list)
    _released: list[int] = field(default_factory=list)  # keys to let go
    _held: Counter[int] = field(default_factory=Counter)
    _round: asyncio.Task[None] | None = None
    _closed: bool = False  # admits nothing more
    _discarded: bool = False  # the connection is closed

    async def admit(self, candidate: Candidate) -> bool:
        """Whether the send may start; if so, the caller starts it at once and `release`s
        it once answered."""
        while not self._closed and not self.stopping.is_set():
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

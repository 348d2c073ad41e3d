"""The last check before a hand-over starts: is its recipient still waiting for it?

A claim commits before its messages go out, and a batch's sends can take a while to
start (the concurrency gate, a provider's rate). Meanwhile staff may close or archive the
campaign, or the number may opt out. SPEC §2: no attempt starts after the call returns.

So every send is admitted first, against the database, under an advisory lock per
campaign: an admission holds its campaigns' locks shared from before it reads the
recipients until the sends it admitted have started; a stop (`hold_back_sends`: close,
archive, an opt-out) takes the lock exclusively in its own transaction. A stop therefore
waits for the admissions in progress (a few milliseconds), and every admission after it
sees what it committed. Admissions that overlap share one round of statements, so a busy
worker makes a few per batch rather than one per message.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.delivery import status as rules

log = logging.getLogger(__name__)

_LOCK = "SELECT pg_advisory_lock_shared(key) FROM unnest($1::bigint[]) AS key"
_UNLOCK = "SELECT pg_advisory_unlock_shared(key) FROM unnest($1::bigint[]) AS key"
# Still waiting for this claim's hand-over: the campaign active, the recipient not stopped
# (an opt-out fails it), and not taken over by another claim since (an expired lease).
_STILL_WAITING = f"""
    SELECT r.id FROM unnest($1::bigint[], $2::uuid[]) AS j (id, claim)
    JOIN recipients AS r ON r.id = j.id AND r.claimed_by = j.claim
    JOIN campaigns AS c ON c.id = r.campaign_id
    WHERE c.status = 'active'
      AND r.status IN ({", ".join(f"'{s.value}'" for s in sorted(rules.WAITING))})
"""


def lock_key(campaign_id: uuid.UUID) -> int:
    """The campaign's advisory lock key: 64 bits of its id."""
    return int.from_bytes(campaign_id.bytes[:8], "big", signed=True)


async def hold_back_sends(session: AsyncSession, campaign_ids: Iterable[uuid.UUID]) -> None:
    """Make the caller's transaction a stop for these campaigns: it waits for admissions
    in progress, and admissions after it wait for it to commit, then see it."""
    for key in sorted({lock_key(c) for c in campaign_ids}):  # one order for everyone
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


@dataclass(frozen=True, slots=True)
class Candidate:
    recipient_id: int
    campaign_id: uuid.UUID
    claim: uuid.UUID


@dataclass
class Admission:
    """Admits the sends of one batch, on a connection of its own (no transaction: the
    locks are the session's, released as soon as the admitted sends have started)."""

    connection: AsyncConnection
    _waiting: list[tuple[Candidate, asyncio.Future[bool]]] = field(default_factory=list)
    _round: asyncio.Task[None] | None = None
    _broken: bool = False

    async def admit(self, candidate: Candidate) -> bool:
        """Whether the send may start now; the caller starts it at once if so."""
        if self._broken:
            return False
        admitted = asyncio.get_running_loop().create_future()
        self._waiting.append((candidate, admitted))
        if self._round is None:
            self._round = asyncio.create_task(self._rounds())
        allowed: bool = await admitted
        return allowed

    async def finish(self) -> None:
        """Admit nothing more, and wait for the round in progress (its locks are let go
        just after its sends start): the connection is the caller's to give back after."""
        self._broken = True
        if self._round is not None:
            await asyncio.shield(self._round)

    async def _rounds(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await self._one_round(batch)
        finally:
            self._round = None

    async def _one_round(self, batch: list[tuple[Candidate, asyncio.Future[bool]]]) -> None:
        keys = sorted({lock_key(c.campaign_id) for c, _ in batch})
        try:
            raw = await self.connection.get_raw_connection()
            driver: asyncpg.Connection = raw.driver_connection
            await driver.fetch(_LOCK, keys)
            rows = await driver.fetch(
                _STILL_WAITING, [c.recipient_id for c, _ in batch], [c.claim for c, _ in batch]
            )
        except Exception:
            # Not sent now: released by the record, due again at once.
            log.exception("admitting %d sends failed; they are released", len(batch))
            await self._give_up(batch)
            return
        waiting = {row[0] for row in rows}
        for candidate, admitted in batch:
            admitted.set_result(candidate.recipient_id in waiting)
        # Each admitted send is woken before this round goes on (the loop runs ready
        # callbacks in order) and starts its request: only then are the locks let go.
        await asyncio.sleep(0)
        try:
            await driver.fetch(_UNLOCK, keys)
        except Exception:
            log.exception("releasing the admission locks failed")
            await self._give_up([])
        except BaseException:
            await self._give_up([])
            raise

    async def _give_up(self, batch: list[tuple[Candidate, asyncio.Future[bool]]]) -> None:
        """Refuse these and every later send of the batch, and close the connection: a
        lock it may still hold must not outlive it."""
        self._broken = True
        for _, admitted in batch:
            if not admitted.done():
                admitted.set_result(False)
        for _, admitted in self._waiting:
            admitted.set_result(False)
        self._waiting = []
        try:
            await self.connection.invalidate()
        except Exception:
            log.exception("closing the admission connection failed")

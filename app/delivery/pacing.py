"""A provider account's rate (`max_messages_per_second`), shared by every worker process:
send slots are reserved in the database (`provider_accounts.next_send_at`).

A claim locks the accounts under a rate (`lock_rated`), takes the slots that begin within
the coming second (`slots_for`, `Slots.take`), and promises the recipients over them
turns one slot apart, after the last turn promised (`Slots.later`,
`provider_accounts.deferred_until`): they are not due until then, so a slow sender's
backlog waits its turn without holding up other schools' messages. Each send then waits
for its slot (`Slots.wait_turn`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import Settings
from app.delivery import sql
from app.kit.clock import utcnow
from app.models import ProviderAccount


@dataclass
class Slots:
    """Send slots reserved for one provider account in this claim."""

    start: datetime
    interval: timedelta
    capacity: int
    deferred: datetime | None = None  # the last turn promised to a waiting recipient
    used: int = 0
    # When this claim last let a send go for the account. A send that starts after its
    # slot (the claim took a while, the concurrency gate) keeps one interval from the one
    # before it, rather than bursting to catch up with the slots already past.
    last_send: datetime | None = None
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def next_free(self) -> datetime:
        return self.start + self.interval * self.used

    def take(self) -> datetime | None:
        if self.used >= self.capacity:
            return None
        slot = self.next_free
        self.used += 1
        return slot

    def later(self) -> datetime:
        """The turn of a recipient over this claim's slots: one interval after the last
        turn promised (by any claim), or the first slot after this claim's. It is not
        due until then (a promise, not a reservation: the claim then takes a slot), so an
        account's backlog neither fills every claim, holding up other schools' recipients
        behind it, nor comes due all at once again."""
        first = self.start + self.interval * self.capacity
        turn = max(first, self.deferred + self.interval) if self.deferred else first
        self.deferred = turn
        return turn

    async def wait_turn(self, slot: datetime, stopping: asyncio.Event) -> None:
        """Wait for `slot`, and one interval after the previous send (or for a stop)."""
        async with self.turn:
            due = slot if self.last_send is None else max(slot, self.last_send + self.interval)
            wait = (due - utcnow()).total_seconds()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), wait)
            self.last_send = utcnow()


async def lock_rated(
    connection: AsyncConnection, accounts: Mapping[uuid.UUID, ProviderAccount]
) -> dict[uuid.UUID, tuple[datetime | None, datetime | None]]:
    """The next free send slot and last promised turn of each account under a rate,
    locked in school id order, after the claim's recipients (`app.sending.locks`): claims in
    other worker processes for that account queue behind this one until it commits what
    it took (`written`)."""
    rated = sorted(i for i, account in accounts.items() if account.max_messages_per_second)
    if not rated:
        return {}
    found = await connection.execute(sql.LOCK_RATED, {"ids": rated})
    return {row.school_id: (row.next_send_at, row.deferred_until) for row in found}


def slots_for(
    account: ProviderAccount,
    stored: tuple[datetime | None, datetime | None],
    now: datetime,
    settings: Settings,
) -> Slots:
    """The account's next send slots that begin within the coming poll interval (at
    least a second): one every `interval`, from the next free one on. Under 1 message a
    second, that is one slot whenever the next free one is that close."""
    next_send_at, deferred_until = stored
    rate = float(account.max_messages_per_second or 0)
    interval = timedelta(seconds=1 / rate)
    start = max(next_send_at or now, now)
    horizon = now + timedelta(seconds=max(settings.worker_poll_seconds, 1.0))
    capacity = -((start - horizon) // interval) if start < horizon else 0  # ceiling
    return Slots(start, interval, capacity, deferred_until)


def written(slots: Mapping[uuid.UUID, Slots]) -> list[sql.SendSlots]:
    """What a claim leaves of each account's slots: its next free one, its last promise."""
    return [sql.SendSlots(i, s.next_free, s.deferred) for i, s in slots.items()]

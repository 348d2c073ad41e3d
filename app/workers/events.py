"""The events' sequencer: gives committed events their positions in the outbox's order
(`app.events.outbox.sequence`), every EVENTS_POLL_SECONDS when idle, at once while more
are waiting. Runs beside every delivery worker (`campanile worker`, and `campanile serve`
unless --no-worker); any number may run: one gives positions at a time, the others find
the lock taken and rest."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.events import outbox
from app.events.deliveries import Deliverer
from app.kit.clock import utcnow
from app.kit.crypto import SecretBox
from app.kit.db import unit_of_work
from app.workers.loop import LoopService

PRUNE_SECONDS = 60.0


class EventSequencer(LoopService):
    """Also prunes the events older than EVENTS_RETENTION_DAYS, a batch every
    PRUNE_SECONDS (and their deliveries with them)."""

    name = "event sequencer"

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        super().__init__(settings.events_poll_seconds)
        self.sessionmaker = sessionmaker
        self.retention = timedelta(days=settings.events_retention_days)
        self._last_prune = 0.0

    async def run_once(self) -> bool:
        async with unit_of_work(self.sessionmaker) as session:
            given = await outbox.sequence(session, outbox.BATCH)
        pruned = 0
        if time.monotonic() - self._last_prune > PRUNE_SECONDS:
            async with unit_of_work(self.sessionmaker) as session:
                pruned = await outbox.prune(session, utcnow() - self.retention)
            if pruned < outbox.BATCH:
                self._last_prune = time.monotonic()
        return given == outbox.BATCH or pruned == outbox.BATCH


class EventDeliverer(LoopService):
    """Posts due webhook deliveries (`app.events.deliveries.Deliverer`), claiming again as
    soon as an endpoint's queued posts run out, resting EVENTS_POLL_SECONDS when nothing is
    due or in flight."""

    name = "event deliverer"

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, box: SecretBox
    ) -> None:
        super().__init__(settings.events_poll_seconds)
        self.deliverer = Deliverer(
            sessionmaker, box, allow_private=settings.events_allow_private_urls
        )

    async def run_once(self) -> bool:
        if await self.deliverer.claim_and_post() > 0:
            return True
        if self.deliverer.in_flight:  # full, or nothing due yet: look again when worth it
            await self.deliverer.room(self.interval_seconds)
            return True
        return False

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            await self.deliverer.finish()

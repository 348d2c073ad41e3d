"""The events' loops, beside every delivery worker (`campanile worker`, and `campanile
serve` unless --no-worker): the pruner of events older than EVENTS_RETENTION_DAYS, and the
deliverer of webhooks."""

from __future__ import annotations

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


class EventPruner(LoopService):
    """Deletes the events older than EVENTS_RETENTION_DAYS (and their deliveries with
    them), a batch every PRUNE_SECONDS, at once again while a batch is full."""

    name = "event pruner"

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        super().__init__(PRUNE_SECONDS)
        self.sessionmaker = sessionmaker
        self.retention = timedelta(days=settings.events_retention_days)

    async def run_once(self) -> bool:
        async with unit_of_work(self.sessionmaker) as session:
            pruned = await outbox.prune(session, utcnow() - self.retention)
        return pruned == outbox.BATCH


class EventDeliverer(LoopService):
    """Posts due webhook deliveries (`app.events.deliveries.Deliverer`), claiming again as
    soon as an endpoint's queued posts run out (or after EVENTS_POLL_SECONDS, for the new
    events of other endpoints), resting EVENTS_POLL_SECONDS when nothing is due or in
    flight."""

    name = "event deliverer"

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, box: SecretBox
    ) -> None:
        super().__init__(settings.events_poll_seconds)
        self.deliverer = Deliverer(
            sessionmaker, box, allow_private=settings.events_allow_private_urls
        )

    async def run_once(self) -> bool:
        claimed = await self.deliverer.claim_and_post()
        if self.deliverer.in_flight:  # claim again once an endpoint's queued posts run out
            await self.deliverer.room(self.interval_seconds)
            return True
        return claimed > 0

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            await self.deliverer.finish()

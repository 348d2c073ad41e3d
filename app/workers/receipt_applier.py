"""The receipt applier: applies stored delivery receipts, batch after batch.

Runs beside every delivery worker (`campanile worker`, and `campanile serve` unless
--no-worker), so the API processes only store receipts; any number of appliers share the
work safely (`app.delivery.applier.apply_stored` takes its receipts FOR UPDATE SKIP
LOCKED).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.delivery import applier
from app.delivery.school_cache import SchoolCache
from app.kit.db import unit_of_work
from app.workers.loop import LoopService


class ReceiptApplier(LoopService):
    """Applies stored receipts whose message is known; rests `receipts_poll_seconds` when
    none are left."""

    name = "receipt applier"

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        super().__init__(settings.receipts_poll_seconds)
        self.sessionmaker = sessionmaker
        # The schools as last loaded: a batch loads one again only when it changed.
        self.schools = SchoolCache()

    async def run_once(self) -> bool:
        async with unit_of_work(self.sessionmaker) as session:
            taken = await applier.apply_stored(session, applier.BATCH, self.schools)
        return len(taken) == applier.BATCH

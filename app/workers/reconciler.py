"""The reconciliation loop (README, `app.delivery.reconcile`): beside every delivery
worker (`campanile worker`, and `campanile serve` unless --no-worker), sharing its
providers. A pass with nothing due is one index probe; several workers share the work
safely (a pass claims its attempts FOR UPDATE SKIP LOCKED and marks them checked)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.delivery import reconcile
from app.kit.db import Inbox
from app.providers.registry import Registry
from app.workers.loop import LoopService

# How often an idle reconciler looks for due attempts: they are due hours after their
# hand-over, so a minute late is nothing, and an idle pass costs one index probe.
POLL_SECONDS = 60.0


class ReconciliationLoop(LoopService):
    """Runs reconciliation passes; another at once while a pass finds a full batch."""

    name = "reconciler"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        registry: Registry,
        receipts: Inbox,
    ) -> None:
        super().__init__(POLL_SECONDS)
        self.reconciler = reconcile.Reconciler(sessionmaker, settings, registry, receipts)

    async def run_once(self) -> bool:
        passed = await self.reconciler.sweep_once(reconcile.BATCH)
        return passed.claimed >= reconcile.BATCH

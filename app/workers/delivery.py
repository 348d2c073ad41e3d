"""The delivery loop (`campanile worker`, or inside `campanile serve`); beside it runs the
receipt applier (`app.workers.receipt_applier`)."""

from __future__ import annotations

import time

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.delivery import applier, engine, inbox
from app.kit.crypto import SecretBox
from app.kit.db import Inbox, unit_of_work
from app.providers.base import Receipt
from app.providers.registry import Registry
from app.workers.loop import LoopService

SWEEP_SECONDS = 30.0


class DeliveryWorker(LoopService):
    """Claims due recipients and hands them to their providers, batch after batch."""

    name = "delivery worker"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        http: httpx.AsyncClient,
        box: SecretBox,
        inbox: Inbox,
        simulator_delay_seconds: float = 1.0,
    ) -> None:
        super().__init__(settings.worker_poll_seconds)
        self.sessionmaker = sessionmaker
        self.inbox = inbox
        self.registry = Registry(
            http, box, settings.public_base_url, self.apply_receipt, simulator_delay_seconds
        )
        self.engine = engine.Engine(sessionmaker, settings, self.registry)
        self.batch_size = settings.worker_batch_size
        self._last_sweep = 0.0

    async def apply_receipt(self, receipt: Receipt) -> None:
        """The simulator's receipts take the same path as a provider's webhook: kept, then
        applied by the receipt applier."""
        await inbox.keep(self.inbox, receipt)

    async def run_once(self) -> bool:
        if time.monotonic() - self._last_sweep > SWEEP_SECONDS:
            async with unit_of_work(self.sessionmaker) as session:
                await engine.sweep(session)
                await applier.report_unmatched(session)
            self._last_sweep = time.monotonic()
        claimed = await self.engine.run_pipelined(self.stopping)
        return claimed >= self.batch_size

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            await self.engine.drain()  # the last batch sent is recorded before we stop

    async def aclose(self) -> None:
        await self.registry.aclose()

"""The audit pruner: deletes audit events older than AUDIT_RETENTION_DAYS.

Runs beside every delivery worker (`campanile worker`, and `campanile serve` unless
--no-worker); any number of pruners share the work (each batch takes its rows FOR UPDATE
SKIP LOCKED). A pass an hour, at once again while a pass finds a full batch.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit import service as audit
from app.config import Settings
from app.kit.db import unit_of_work
from app.workers.loop import LoopService

INTERVAL_SECONDS = 3600.0
BATCH = 1000


class AuditPruner(LoopService):
    name = "audit pruner"

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        super().__init__(INTERVAL_SECONDS)
        self.sessionmaker = sessionmaker
        self.retention_days = settings.audit_retention_days

    async def run_once(self) -> bool:
        if not self.retention_days:  # 0: kept as long as their school
            return False
        async with unit_of_work(self.sessionmaker) as session:
            deleted = await audit.prune(session, self.retention_days, batch=BATCH)
        return deleted == BATCH

"""Writes the API keys' last use, noted in memory by this process's requests
(`app.schools.service.LastUsed`), every FLUSH_SECONDS, and once more when it stops."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.schools.service import LastUsed
from app.workers.loop import LoopService


class LastUseWriter(LoopService):
    name = "last use writer"

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], last_used: LastUsed) -> None:
        super().__init__(LastUsed.FLUSH_SECONDS)
        self.sessionmaker = sessionmaker
        self.last_used = last_used

    async def run_once(self) -> bool:
        await self.last_used.flush(self.sessionmaker)
        return False

    async def run(self) -> None:
        await super().run()
        await self.last_used.flush(self.sessionmaker)

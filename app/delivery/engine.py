"""The delivery engine: claim due recipients, hand their messages to providers, record.

One cycle (`Engine.run_once`) is three steps, never holding a row lock across a provider
call, each in a module of its own:
1. `app.delivery.claim`, in one transaction: lock due recipients, lease them as `Job`s;
2. `app.delivery.send`, outside any transaction: hand the messages over, each admitted just
   before it starts (`app.delivery.admission`), paced (`app.delivery.pacing`), a recovery
   asked about first (`app.delivery.recover`);
3. `app.delivery.record`, in one transaction: attempts, recipients, opt-outs, completion.

The worker pipelines the cycles (`run_pipelined`): the record of one batch runs while the
next is claimed and sent, at most one record in flight, and a stop waits for it (`drain`).
The SQL of all three is in `app.delivery.sql`; the words are in the README's glossary.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import metrics
from app.campaigns import repository as campaigns_repository
from app.config import Settings
from app.delivery import claim as claim_step
from app.delivery import record as record_step
from app.delivery import send as send_step
from app.delivery.jobs import UNKNOWN, Handover, Job
from app.delivery.school_cache import SchoolCache
from app.delivery.sweep import sweep
from app.kit.clock import utcnow
from app.kit.db import unit_of_work
from app.providers.registry import Registry

__all__ = ["ACTIVATE_SECONDS", "UNKNOWN", "Engine", "Handover", "Job", "sweep"]

log = logging.getLogger(__name__)

# Scheduled campaigns are looked at (to start those whose time has come) this often.
ACTIVATE_SECONDS = 1.0


@dataclass
class Engine:
    sessionmaker: async_sessionmaker[AsyncSession]
    settings: Settings
    registry: Registry
    rng: random.Random = field(default_factory=random.Random)
    # The record of the last batch `run_pipelined` sent, while it runs.
    _recording: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _activated: float = field(default=-ACTIVATE_SECONDS, init=False, repr=False)
    _schools: SchoolCache = field(default_factory=SchoolCache, init=False, repr=False)
    # Due recipients the last claim leased or settled (deferred, moved, stopped).
    _dealt_with: int = field(default=0, init=False, repr=False)

    async def run_once(self, stopping: asyncio.Event | None = None) -> int:
        """One claim-send-record cycle, recorded when it returns; the number claimed."""
        await self.activate_due()
        with metrics.claim_seconds.time():
            jobs = await self.claim()
        if not jobs:
            return 0
        outcomes = await self.send(jobs, stopping or asyncio.Event())
        await self.record(outcomes)
        return len(jobs)

    async def run_pipelined(self, stopping: asyncio.Event) -> int:
        """One cycle whose record runs on while the next cycle claims and sends (at most
        one record in flight; a cycle that found less than a full batch records before it
        returns, so an idle worker has nothing in flight). `drain` waits for the record.
        The number of due recipients the claim dealt with, sent or not (a full batch:
        more may be due at once).

        Records stay in batch order: batch N is recorded before batch N+1's record starts,
        so N+1's recoveries see the message ids N recorded (`recover.recorded_elsewhere`).
        A batch sent while N is recorded is leased, so no claim takes its recipients again.
        """
        await self.activate_due()
        with metrics.claim_seconds.time():
            jobs = await self.claim()
        outcomes = await self.send(jobs, stopping) if jobs else []
        await self.drain()
        if outcomes:
            self._recording = asyncio.create_task(self.record(outcomes))
            if len(jobs) < self.settings.worker_batch_size:
                await self.drain()
        return self._dealt_with

    async def drain(self) -> None:
        """Wait for the record in flight, if any. Its failure is logged, not raised: the
        cycle that waits has sent its own batch and must still record it. The failed
        batch's recipients stay leased with `claimed_at` set, and are recovered when their
        lease runs out."""
        recording, self._recording = self._recording, None
        if recording is None:
            return
        try:
            await recording
        except Exception:
            log.exception("recording a sent batch failed; its lease will recover it")

    async def activate_due(self) -> None:
        """Start the scheduled campaigns whose time has come: at most once a second (so
        within a second of their time), not in each of the many claims a second."""
        if time.monotonic() - self._activated < ACTIVATE_SECONDS:
            return
        async with unit_of_work(self.sessionmaker) as session:
            await campaigns_repository.activate_due(session, utcnow())
        self._activated = time.monotonic()

    async def claim(self) -> list[Job]:
        """Step 1 (`app.delivery.claim`), in a transaction of its own."""
        self._dealt_with = 0
        async with unit_of_work(self.sessionmaker) as session:
            taken = await claim_step.claim(session, self.settings, self.registry, self._schools)
        if taken is None:
            return []
        self._dealt_with = taken.dealt_with
        return taken.jobs

    async def send(self, jobs: list[Job], stopping: asyncio.Event) -> list[Handover]:
        """Step 2 (`app.delivery.send`)."""
        return await send_step.send(
            self.sessionmaker, jobs, stopping, self.settings.worker_concurrency
        )

    async def record(self, outcomes: list[Handover]) -> None:
        """Step 3 (`app.delivery.record`)."""
        await record_step.record(self.sessionmaker, outcomes, self.rng)

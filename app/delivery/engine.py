"""The delivery engine: claim due recipients, hand their messages to providers, record.

One cycle (`Engine.run_once`) is three steps, never holding a row lock across a provider
call, each in a module of its own:
1. `app.delivery.claim`, in one transaction: lock due recipients, lease them as `Job`s;
2. `app.delivery.send`, outside any transaction: hand the messages over, each admitted just
   before it starts (`app.delivery.admission`), paced (`app.delivery.pacing`), a recovery
   asked about first (`app.delivery.recover`);
3. `app.delivery.record`, in one transaction: attempts, recipients, opt-outs, completion.

The worker pipelines the cycles (`run_pipelined`): a batch's sends go on while the next is
claimed, and each answer is recorded as it comes (`app.delivery.recorder`), so a send that
hangs until its timeout delays only itself. At most `WORKER_CONCURRENCY` sends are in flight
(one gate for all batches; one that straggles gives its place to the next, among a bounded
number of stragglers: `app.delivery.gate`), at most about two batches besides them are held
unrecorded, and a stop waits for the sends in flight and their records (`drain`).
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
from app.delivery.admission import Admissions
from app.delivery.gate import Gate
from app.delivery.jobs import UNKNOWN, Handover, Job
from app.delivery.recorder import Batch, Recorder
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
    # At most `worker_concurrency` sends in flight, whatever their batch, and the
    # stragglers beside them (`app.delivery.gate`).
    _gate: Gate = field(init=False, repr=False)
    # The admissions of the batches in flight, on one connection (`app.delivery.admission`).
    _admissions: Admissions = field(init=False, repr=False)
    # `run_pipelined`'s batches still sending, and the recorder of their answers.
    _sending: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)
    _recorder: Recorder = field(init=False, repr=False)
    _activated: float = field(default=-ACTIVATE_SECONDS, init=False, repr=False)
    _schools: SchoolCache = field(default_factory=SchoolCache, init=False, repr=False)
    # Due recipients the last claim leased or settled (deferred, moved, stopped).
    _dealt_with: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._gate = Gate(self.settings.worker_concurrency, self.settings.worker_straggling_seconds)
        self._recorder = Recorder(self.record)
        self._admissions = Admissions(self.sessionmaker)

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
        """Claim a batch and start its sends, which go on after this returns, each answer
        recorded as it comes. The number of due recipients the claim dealt with, sent or
        not (a full batch: more may be due at once). `drain` waits for what is in flight.

        A batch is claimed only while at most a batch's worth of claimed jobs, besides the
        sends in flight (`worker_concurrency` at most, and the stragglers beside them:
        `app.delivery.gate`), is not recorded yet: the recorder keeps up, sends that hang
        step aside or fill the gate but do not stop the claims, and a worker holds at most
        two batches and the sends in flight.
        A batch's recoveries answer before anything else is claimed: a recovery looks for
        its message among the provider's, and a later batch's send (same number, same
        text) must not be among them unrecorded (`recover`).
        """
        await self.activate_due()
        settings = self.settings
        await self._recorder.room(settings.worker_batch_size + self._gate.bound)
        with metrics.claim_seconds.time():
            jobs = await self.claim()
        if jobs:
            batch = self._recorder.expect(jobs)
            sending = asyncio.create_task(self._send(jobs, stopping, batch))
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)
            await batch.recovered()
        return self._dealt_with

    async def drain(self) -> None:
        """Wait for the sends in flight and for their answers' records. A record's failure
        is logged, not raised: its recipients stay leased with `claimed_at` set, and are
        recovered when their lease runs out."""
        while sending := [task for task in self._sending if not task.done()]:
            await asyncio.gather(*sending)
        await self._recorder.settled()

    async def _send(self, jobs: list[Job], stopping: asyncio.Event, batch: Batch) -> None:
        """A batch's send step, its answers given to the recorder as they come."""
        try:
            await send_step.send(
                self.sessionmaker, jobs, stopping, self._gate, batch.answered, self._admissions
            )
        except Exception:
            log.exception("sending a batch failed; its unanswered jobs' lease will recover them")
        finally:
            batch.finished()

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
            self.sessionmaker, jobs, stopping, self._gate, admissions=self._admissions
        )

    async def record(self, outcomes: list[Handover]) -> None:
        """Step 3 (`app.delivery.record`)."""
        await record_step.record(self.sessionmaker, outcomes, self.rng)

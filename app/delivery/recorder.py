"""The recorder: a worker's answers recorded as they come, so a hanging send delays only
itself.

Each send gives its answer (`Handover`) to the recorder as soon as the provider has
answered (`Batch.answered`). One record runs at a time (`app.delivery.record`), taking
every answer that came since the last one began: a record never waits for a send still in
flight, and two records of one worker never wait for each other's row locks.

A recovery's answer (`Job.recovering`) is held until every send claimed with or before it
has answered, so that it is recorded with or after theirs: `recover.recorded_elsewhere`
then sees any message of theirs the recovery found. (The engine claims nothing new until a
batch's recoveries have answered, `Batch.recovered`: no later send goes out while one
looks its message up.)

The claimed jobs not recorded yet (`open`: waiting for their turn, in flight, answered)
bound what a worker holds: the engine claims a batch only while they are few enough
(`room`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable

from app.delivery.jobs import Handover, Job

log = logging.getLogger(__name__)


class Batch:
    """One claimed batch's part in the recorder: `answered` for each of its sends' answers,
    `finished` once its send step has ended (however it ended)."""

    def __init__(self, recorder: Recorder, number: int, recovering: int) -> None:
        self._recorder = recorder
        self._number = number
        self._recovering = recovering  # recoveries that have not answered yet
        self._recovered = asyncio.Event()
        if not recovering:
            self._recovered.set()

    def answered(self, handover: Handover) -> None:
        if handover.job.recovering:
            self._recovering -= 1
            if not self._recovering:
                self._recovered.set()
        self._recorder._answered(self._number, handover)

    def finished(self) -> None:
        self._recovered.set()
        self._recorder._finished(self._number)

    async def recovered(self) -> None:
        """Wait until each of its recoveries has answered (looked up, and sent if need be)."""
        await self._recovered.wait()


class Recorder:
    def __init__(self, record: Callable[[list[Handover]], Awaitable[None]]) -> None:
        self._record = record
        self._numbers = itertools.count()
        self._unanswered: dict[int, int] = {}  # by batch number, oldest first
        self._ready: list[Handover] = []  # answered, for the next record
        self._held: list[tuple[int, Handover]] = []  # recoveries' answers, by batch number
        self._recording = 0  # answers in the record running
        self._running: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()

    def expect(self, jobs: list[Job]) -> Batch:
        """A batch was claimed: its answers are to come."""
        number = next(self._numbers)
        self._unanswered[number] = len(jobs)
        return Batch(self, number, sum(job.recovering for job in jobs))

    @property
    def open(self) -> int:
        """Claimed jobs not recorded yet."""
        held = len(self._held) + len(self._ready) + self._recording
        return sum(self._unanswered.values()) + held

    async def room(self, limit: int) -> None:
        """Wait until at most `limit` claimed jobs are not recorded yet."""
        await self._until(lambda: self.open <= limit)

    async def settled(self) -> None:
        """Wait until every answer given is recorded (sends still in flight: see the
        caller, which waits for its batches first)."""
        await self._until(lambda: self._running is None)

    def _answered(self, number: int, handover: Handover) -> None:
        if number in self._unanswered:
            self._unanswered[number] -= 1
            if not self._unanswered[number]:
                del self._unanswered[number]
        if handover.job.recovering:
            self._held.append((number, handover))
        else:
            self._ready.append(handover)
        self._go_on()

    def _finished(self, number: int) -> None:
        """Its send step ended: answers it did not give never come (left to their lease)."""
        self._unanswered.pop(number, None)
        self._go_on()

    def _go_on(self) -> None:
        oldest = next(iter(self._unanswered), None)
        if self._held:
            free = [h for n, h in self._held if oldest is None or n < oldest]
            self._ready.extend(free)
            self._held = [(n, h) for n, h in self._held if oldest is not None and n >= oldest]
        if self._running is None and self._ready:
            self._running = asyncio.create_task(self._records())
        self._notify()

    async def _records(self) -> None:
        try:
            while self._ready:
                answers, self._ready = self._ready, []
                self._recording = len(answers)
                try:
                    await self._record(answers)
                except Exception:
                    log.exception("recording %d answers failed; left to their lease", len(answers))
                finally:
                    self._recording = 0
                    self._notify()
        finally:
            self._running = None
            self._notify()

    def _notify(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            await self._progress.wait()

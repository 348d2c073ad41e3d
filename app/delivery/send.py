"""The send, step 2 of a cycle, outside any transaction: each job's message handed to its
provider, at most `WORKER_CONCURRENCY` at once (the engine's gate, shared by its batches;
a send that straggles gives its place to the next: `app.delivery.gate`),
each in its rate slot (`app.delivery.pacing`), each admitted just before it starts
(`app.delivery.admission`: not if staff stopped it meanwhile), a recovery asked about first
(`app.delivery.recover`), and given the seconds then left in its school's sending window
(`_timed`). Each answer is passed on as it comes (`answered`: the worker's recorder), so a
send still in flight holds up nothing but itself."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.delivery.admission import Admissions, Candidate
from app.delivery.gate import Gate
from app.delivery.jobs import Handover, Job
from app.delivery.recover import Finder
from app.kit.clock import utcnow
from app.providers.base import LookupAnswer, OutboundMessage, SendResult
from app.sending import schedule
from app.sending.outcomes import Outcome


async def send(
    sessionmaker: async_sessionmaker[AsyncSession],
    jobs: list[Job],
    stopping: asyncio.Event,
    gate: Gate,
    answered: Callable[[Handover], None] | None = None,
    admissions: Admissions | None = None,
) -> list[Handover]:
    """Hand the jobs' messages over, each in a turn of `gate`, each admitted by
    `admissions` (the worker's, shared by its batches in flight; else one of their own);
    what became of each, in the jobs' order, each also given to `answered` as soon as it
    is known."""
    finder = Finder()

    async def one(job: Job) -> Handover:
        handover = await hand_over(job)
        if answered is not None:
            answered(handover)
        return handover

    async def hand_over(job: Job) -> Handover:
        async with gate.place() as place:
            if job.slots is not None and job.not_before is not None:
                await job.slots.wait_turn(job.not_before, stopping)
            if stopping.is_set():
                return Handover(job, None)
            if job.recovering:
                found = await finder.find(job)
                if found.answer is LookupAnswer.cant_tell:
                    return Handover(job, None, undecided=True)  # never a send: ask again
                if found.provider_message_id is not None:
                    sent = SendResult(Outcome.accepted, found.provider_message_id, "queued")
                    return Handover(job, sent)
            if job.recover_only:
                return Handover(job, None, expired=job.expire_reason is not None)
            candidate = Candidate(job.recipient_id, job.campaign_id, job.claim)
            if not await admission.admit(candidate):
                return Handover(job, None)  # stopped meanwhile (close, archive, opt-out)
            try:
                return Handover(job, await place.answer(job.provider.send(_timed(job))))
            finally:
                admission.release(candidate)  # answered: a stop may go ahead

    async with (admissions or Admissions(sessionmaker)).batch(stopping) as admission:
        return list(await asyncio.gather(*(one(job) for job in jobs)))


def _timed(job: Job) -> OutboundMessage:
    """The job's message with the seconds left in its school's sending window, reckoned
    now, as the send starts (README, Delivery), rather than at the claim: a send may wait for its
    rate slot or its turn, and the provider's hold must end when the window does, not that
    long after. The window's close was found once per school at the claim; this is one
    subtraction."""
    if job.window_closes is None:
        return job.message
    validity = schedule.seconds_until(job.window_closes, utcnow())
    return dataclasses.replace(job.message, validity_seconds=validity)

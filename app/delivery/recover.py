"""Recovery: a hand-over that may have gone out already is asked about before anything is
sent again.

A worker killed between its claim and its record leaves its recipients leased with
`claimed_at` set; when the lease runs out another worker claims them for a recovery. A
receipt that named the hand-over's attempt in its callback URL (`app.providers.callbacks`)
says the message went out, and as which message (`mark_taken`); else the provider is asked
whether it went out since the hand-over began (`Provider.find_sent`), and the message is
sent only when it did not. The same holds for an attempt recorded as `unknown` (the provider's
answer was lost). The provider answers sent, not sent, or can't tell (README, Delivery): can't tell
never sends; the recipient stays as it is, its claim's hand-over begun, and is asked about
again later (`ask_again_at`), until the provider could no longer be holding the message
(`Provider.holding_seconds`), when it is taken as not sent.

A recovery must find its own message, not another attempt's with the same text to the same
number: the message ids other attempts hold are excluded (`mark_taken`), recoveries of one
number and text take turns (`Finder`), and one that still finds a message another attempt
holds is recorded as not known yet (`recorded_elsewhere`, `NOT_ITS_MESSAGE`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.delivery import sql
from app.delivery.jobs import Handover, Job
from app.kit.clock import utcnow
from app.providers.base import Lookup, LookupAnswer, SendResult
from app.providers.http_answers import SOFT_SENDING_ERROR
from app.sending.outcomes import Outcome

log = logging.getLogger(__name__)

# A recovery found a message that another attempt holds (recorded, or found or sent in the
# same batch): this attempt's own message may or may not exist. Ask again next time.
NOT_ITS_MESSAGE = SendResult(
    Outcome.soft,
    classification=SOFT_SENDING_ERROR,
    outcome_unknown=True,
    error_message="the message found is another attempt's",
)


async def mark_taken(session: AsyncSession, jobs: list[Job]) -> None:
    """Give each recovering job the message id a receipt naming its attempt brought, if one
    came, and the message ids of its number's other attempts."""
    recovering = {j.recipient_id: j for j in jobs if j.recovering}
    if not recovering:
        return
    named = {
        (row.named_attempt_id, row.provider): row.provider_message_id
        for row in await session.execute(
            sql.NAMED, {"ids": [j.attempt_id for j in recovering.values()]}
        )
    }
    for job in recovering.values():
        job.named_message = named.get((job.attempt_id, job.attempt_provider))
    # find_sent looks from the day of the earliest hand-over on (and a little before).
    since = min(j.started for j in recovering.values()) - timedelta(days=1)
    taken: dict[int, set[str]] = {}
    found = await session.execute(sql.TAKEN, {"ids": list(recovering), "since": since})
    for row in found:
        if row.provider_message_id is not None:
            taken.setdefault(row.recipient_id, set()).add(row.provider_message_id)
    for recipient_id, job in recovering.items():
        job.taken = frozenset(taken.get(recipient_id, ()))


class Finder:
    """One batch's recoveries: the same text may have gone to one number for two
    attempts, so their lookups take turns, each excluding what the others found."""

    def __init__(self) -> None:
        self._turns: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._found: set[str] = set()

    async def find(self, job: Job) -> Lookup:
        """Whether the job's hand-over went out (with its message id if it did): a receipt
        that named its attempt says so at once; else the provider is asked."""
        if job.named_message is not None:
            log.info(
                "attempt %s went out as %s (a receipt named it): not sent again",
                job.attempt_id,
                job.named_message,
            )
            self._found.add(job.named_message)
            return Lookup.sent(job.named_message)
        to, body = job.message.to, job.message.body
        async with self._turns[to, body]:
            found = await job.provider.find_sent(
                to, job.started, body, exclude=job.taken | self._found
            )
            if found.provider_message_id is not None:
                self._found.add(found.provider_message_id)
        if found.answer is LookupAnswer.sent:
            log.info(
                "attempt %s went out as %s: not sent again",
                job.attempt_id,
                found.provider_message_id,
            )
        elif found.answer is LookupAnswer.cant_tell:
            found = self._after_holding(job, found)
        return found

    @staticmethod
    def _after_holding(job: Job, found: Lookup) -> Lookup:
        """ "Can't tell" stays so until the provider could no longer hold the message: then,
        no receipt having named the attempt (it would be resolved, not recovering), it is
        taken as not sent (README, Delivery)."""
        held = (utcnow() - job.started).total_seconds()
        if held > job.provider.holding_seconds:
            log.warning(
                "recipient %s: %s cannot tell whether it went out (%s), and no receipt came "
                "in %.0f s, longer than it holds a message: taken as not sent",
                job.recipient_id,
                job.provider.name,
                found.why,
                held,
            )
            return Lookup.not_sent()
        log.warning(
            "recipient %s: %s cannot tell whether it went out (%s): asked again later",
            job.recipient_id,
            job.provider.name,
            found.why,
        )
        return found


def ask_again_at(job: Job, now: datetime, base: float, cap: float) -> datetime:
    """When a recovery that could not tell asks again: as long after now as the hand-over
    is old, so the waits double (between the school's base and max retry delays), and never
    later than just past the provider's holding time, when the answer no longer matters."""
    age = (now - job.started).total_seconds()
    wait = min(max(age, base), cap)
    holding_ends = job.started + timedelta(seconds=job.provider.holding_seconds + 1)
    return max(min(now + timedelta(seconds=wait), holding_ends), now + timedelta(seconds=1))


async def recorded_elsewhere(session: AsyncSession, outcomes: list[Handover]) -> set[int]:
    """The recipients whose recovery found a message id another attempt holds: recorded
    before, sent in this batch, or found first by another recovery of this batch (same text
    to the same number). Recording it would break the one-attempt-per-message rule."""
    recovered: list[tuple[int, tuple[str, str]]] = []
    taken: set[tuple[str, str]] = set()
    for outcome in outcomes:
        result = outcome.result
        if result is None or result.provider_message_id is None:
            continue
        key = (outcome.job.attempt_provider, result.provider_message_id)
        if not outcome.job.recovering:
            taken.add(key)
        else:
            recovered.append((outcome.job.recipient_id, key))
    if not recovered:
        return set()
    found = await session.execute(sql.recorded_messages([key for _, key in recovered]))
    taken.update(
        (row.provider, row.provider_message_id) for row in found if row.provider_message_id
    )
    mismatched: set[int] = set()
    for recipient_id, key in recovered:
        if key in taken:
            log.warning("recipient %s: %s is another attempt's message", recipient_id, key[1])
            mismatched.add(recipient_id)
        taken.add(key)
    return mismatched

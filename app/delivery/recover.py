"""Recovery: a hand-over that may have gone out already is asked about before anything is
sent again.

A worker killed between its claim and its record leaves its recipients leased with
`claimed_at` set; when the lease runs out another worker claims them and asks the
provider whether the message went out since then (`Provider.find_sent`), and only sends
when it did not. The same holds for an attempt recorded as `unknown` (the provider's
answer was lost). A recovery must find its own message, not another attempt's with the
same text to the same number: the message ids other attempts hold are excluded
(`mark_taken`), recoveries of one number and text take turns (`Finder`), and one that
still finds a message another attempt holds is recorded as not known yet
(`recorded_elsewhere`, `NOT_ITS_MESSAGE`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.delivery import sql
from app.delivery.jobs import Handover, Job
from app.providers.base import SendResult
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
    """Give each recovering job the message ids of its number's other attempts."""
    recovering = {j.recipient_id: j for j in jobs if j.recovering}
    if not recovering:
        return
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

    async def find(self, job: Job) -> str | None:
        """The message id of the job's hand-over, if it went out."""
        to, body = job.message.to, job.message.body
        async with self._turns[to, body]:
            sid = await job.provider.find_sent(
                to, job.started, body, exclude=job.taken | self._found
            )
            if sid is not None:
                self._found.add(sid)
        if sid is not None:
            log.info("attempt %s went out as %s: not sent again", job.attempt_id, sid)
        return sid


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

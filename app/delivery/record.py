"""The record, step 3 of a cycle, in one transaction: each hand-over's attempt row (written
now, with the provider's message id and status, created at `claimed_at`), the recipient's
change through the status rules, 21610 opt-outs, and the completion rule. Receipts are not
applied here: the webhooks keep them (`app.delivery.inbox`) and the receipt applier
(`app.delivery.applier`) applies them once their message id is recorded.

A record applies to a recipient only while it is still its claim's (`claimed_by`): a
worker that outlived its lease finds the recipient taken over, and only adds the message
it sent, if any.
"""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import metrics
from app.campaigns import service as campaigns
from app.delivery import recover, sql
from app.delivery.jobs import UNKNOWN, Handover, Job
from app.delivery.sql import NewAttempt, RecipientRow, RecoveredAttempt
from app.kit.clock import utcnow
from app.kit.db import unit_of_work
from app.models import CampaignStatus, School
from app.opt_outs import service as opt_outs
from app.providers.base import SendResult
from app.sending import policy
from app.sending import status as rules
from app.sending.outcomes import Outcome
from app.sending.reasons import OPTED_OUT
from app.sending.state import apply_change, state_of

log = logging.getLogger(__name__)


async def record(
    sessionmaker: async_sessionmaker[AsyncSession], outcomes: list[Handover], rng: random.Random
) -> None:
    """Record answers (a batch's, or those that came: `app.delivery.recorder`). A
    connection the database dropped since its last use (a restart, a failover: the pool
    pings only connections that rested, see `app.kit.db.CHECK_AFTER_SECONDS`) fails the
    first statement and is replaced with the rest of the pool, so the answers are recorded
    once more on a new one rather than left to their lease. Any other failure is the
    caller's."""
    try:
        await _record(sessionmaker, outcomes, rng)
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
        log.warning("recording answers lost its connection (%s): once more", error)
        await _record(sessionmaker, outcomes, rng)
    for outcome in outcomes:
        if outcome.result is not None:
            provider = outcome.job.attempt_provider
            metrics.messages_sent.labels(provider, outcome.result.outcome.value).inc()


@dataclass
class _Attempts:
    """The attempt rows a record writes: new ones, and recovered ones (their ids known)."""

    created: list[NewAttempt] = field(default_factory=list)
    recovered: list[RecoveredAttempt] = field(default_factory=list)

    def add(self, job: Job, result: SendResult) -> None:
        if result.outcome is Outcome.accepted:
            assert result.provider_message_id is not None
            status, failed, code = result.provider_status or "queued", False, None
        else:
            status, failed = UNKNOWN if result.outcome_unknown else "failed", True
            code = result.error_code
        sid = result.provider_message_id
        if job.recorded:
            self.recovered.append(RecoveredAttempt(job.attempt_id, sid, status, failed, code))
        else:
            self.created.append(
                NewAttempt(
                    job.attempt_id,
                    job.recipient_id,
                    job.attempt_provider,
                    sid,
                    status,
                    code,
                    job.started,
                )
            )


async def _record(
    sessionmaker: async_sessionmaker[AsyncSession], outcomes: list[Handover], rng: random.Random
) -> None:
    async with unit_of_work(sessionmaker) as session:
        now = utcnow()
        ids = sorted({o.job.recipient_id for o in outcomes})
        # Locked with them, in one id order (`app.sending.locks`): the waiting recipients of
        # numbers that opted out at the provider, which the opt-out below fails.
        opted = [o.job.recipient_id for o in outcomes if o.result and _is_opt_out(o.result)]
        connection = await session.connection()  # plain rows, as in the claim
        statement = sql.record(opted_out=bool(opted))
        found = await connection.execute(statement, {"ids": ids, "opted_out": opted})
        rows = {row.id: row for row in map(RecipientRow.of, found)}
        schools = await _load_schools(session, {row.school_id for row in rows.values()})
        mismatched = await recover.recorded_elsewhere(session, outcomes)
        attempts = _Attempts()
        written: list[RecipientRow] = []
        opted_out: list[RecipientRow] = []
        finished: set[uuid.UUID] = set()
        for outcome in outcomes:
            job = outcome.job
            row = rows[job.recipient_id]
            # Still this claim's recipient, unless its lease ran out and another claim
            # took it over (and maybe recorded it already).
            ours = row.claimed_by == job.claim
            if job.recipient_id in mismatched:
                outcome = Handover(job, recover.NOT_ITS_MESSAGE)
            result = outcome.result
            if result is None:
                if ours:
                    if outcome.undecided:
                        _ask_again(row, job, schools[row.school_id], now)
                    elif outcome.expired:
                        _expire(row, job)
                        finished.add(row.campaign_id)
                    else:
                        _release(row, job, now)
                    written.append(row)
                continue
            if _is_opt_out(result):
                opted_out.append(row)  # whoever records it: an opt-out is never lost
            if not ours:
                if result.provider_message_id is not None and not job.recorded:
                    # A message that exists (its receipts need it), recorded in its attempt
                    # unless the claim that took the hand-over over recorded it first (its
                    # receipts name the attempt all the same).
                    attempts.add(job, result)
                continue
            attempts.add(job, result)
            row.claimed_at = row.claimed_by = None
            _record_one(row, schools[row.school_id], result, now, rng)
            written.append(row)
            if row.status in (rules.Status.delivered.value, rules.Status.failed.value):
                finished.add(row.campaign_id)
        await session.execute(*sql.write_record(written, attempts.created, attempts.recovered, now))
        # After the writes: the opt-out cancels the number's other waiting recipients as
        # they now stand (this batch's included, their rows locked above).
        await opt_outs.opted_out_at_provider(session, opted_out)
        await campaigns.complete_finished(session, finished)


def _record_one(
    row: RecipientRow, school: School, result: SendResult, now: datetime, rng: random.Random
) -> None:
    """The recipient's change for one send result (its attempt's is the caller's)."""
    change = rules.on_send_result(
        state_of(row),
        row.campaign_status,
        result.outcome,
        result.classification,
        result.error_code,
        retry_allowed=policy.retry_allowed(school, row, now),
    )
    if change is not None:
        due = None
        if change.retry:
            due = policy.retry_due(school, row, now, result.retry_after_seconds, rng)
        apply_change(row, change, due, now)
    elif row.next_attempt_at is not None and row.status != rules.Status.scheduled.value:
        row.next_attempt_at = None  # our lease: nothing more is due


def _expire(row: RecipientRow, job: Job) -> None:
    """Its retry age ran out and its last hand-over did not go out: it fails with the
    reason of its last soft bounce."""
    row.claimed_at = row.claimed_by = None
    change = rules.on_retry_expired(state_of(row), job.expire_reason)
    if change is not None:
        apply_change(row, change)


def _ask_again(row: RecipientRow, job: Job, school: School, now: datetime) -> None:
    """The provider could not tell whether the hand-over went out: nothing was sent, the
    recipient stays as it is (its hand-over still begun: `claimed_at`), and is due again
    when it is time to ask (README, Delivery). Unless its attempt's row exists and the
    recipient no longer waits (a receipt naming the attempt settled it meanwhile, or staff
    stopped it): nothing will be sent, and the attempt's receipts find it by its name, so
    there is nothing left to ask."""
    row.claimed_by = None
    if job.recorded and state_of(row).status not in rules.WAITING:
        row.claimed_at = None
        row.next_attempt_at = None
        return
    row.next_attempt_at = recover.ask_again_at(
        job,
        now,
        float(school.retry_base_delay_seconds),
        float(school.retry_max_delay_seconds),
    )


def _release(row: RecipientRow, job: Job, now: datetime) -> None:
    """Not sent (a shutdown, or its admission refused it): the recipient is due again at
    once, as if never claimed (unless its campaign was closed or archived, or it opted out,
    meanwhile: then nothing is due). A recovery stays one: the hand-over it took over may
    still have gone out."""
    if not job.recovering:
        row.attempts = max(row.attempts - 1, 0)
        row.claimed_at = None
    row.claimed_by = None
    waiting = state_of(row).status in rules.WAITING
    active = row.campaign_status is CampaignStatus.active
    row.next_attempt_at = now if waiting and active else None


async def _load_schools(
    session: AsyncSession, school_ids: set[uuid.UUID]
) -> dict[uuid.UUID, School]:
    query = select(School).where(School.id.in_(school_ids))
    return {s.id: s for s in (await session.execute(query)).scalars()}


def _is_opt_out(result: SendResult) -> bool:
    return result.classification is not None and result.classification.reason == OPTED_OUT

"""Applying delivery receipts, whatever the provider: stored once, applied through the
status rules, kept waiting when their message id is not known yet (SPEC §3, §6).

Webhook endpoints and the simulator both call `ingest`; the delivery engine calls
`apply_waiting` the moment it records a provider message id; the worker's sweep calls
`report_unmatched` so receipts that never find their message are seen.

Why a receipt and the send's record step can never miss each other: both take
`lock_message` for the message id before they look for the other. The receipt side looks
for the attempt in a statement issued after the lock is granted, so (READ COMMITTED) it sees
an attempt the record step committed while it waited; the record step looks for waiting
receipts after its own lock, so it sees a receipt committed before it.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.campaigns import service as campaigns
from app.delivery import policy
from app.delivery import status as rules
from app.kit.clock import utcnow
from app.models import Attempt, Campaign, CampaignStatus, OptOutSource, Recipient, School
from app.models import Receipt as StoredReceipt
from app.opt_outs import service as opt_outs
from app.providers.base import Classification, Receipt
from app.recipients import service as recipients

log = logging.getLogger(__name__)

# A receipt still waiting for its message this long after it arrived most likely never will
# find it (a send is recorded seconds after the provider answers; a crashed worker's
# attempt is recovered once its lease, 300 s by default, runs out).
UNMATCHED_AFTER = timedelta(minutes=15)


class Result(enum.StrEnum):
    applied = "applied"  # moved its attempt forward (and the recipient, if the rules say so)
    stale = "stale"  # late or out of order for its attempt: kept in history only
    duplicate = "duplicate"  # the same event was received before
    waiting = "waiting"  # its message id is not known yet; applied when it is


@dataclass(frozen=True, slots=True)
class _Facts:
    """What a receipt says, from the wire or from its stored row."""

    provider_status: str
    error_code: str | None
    classification: Classification | None


@dataclass(frozen=True, slots=True)
class _Target:
    """The attempt a receipt is about, with its recipient (locked) and their context."""

    attempt: Attempt
    recipient: Recipient
    campaign_status: CampaignStatus
    school: School


async def lock_message(session: AsyncSession, provider: str, provider_message_id: str) -> None:
    """Serialise everything that concerns one provider message id, so a receipt and the
    transaction that records the id can never miss each other. A statement of its own: a
    statement's snapshot is taken when it starts, so whatever looks for the other side must
    come in a later statement, after the lock is granted."""
    await session.execute(_LOCK, {"key": f"{provider}:{provider_message_id}"})


async def ingest(session: AsyncSession, receipt: Receipt) -> Result:
    """Store a receipt once (by provider event id) and apply it if its message is known.

    Statements, in the caller's one transaction: the message lock; the attempt with its
    recipient (locked) and context; the receipt's insert, already marked applied when the
    attempt is known, so that the insert alone tells a duplicate; then the changes.
    """
    await lock_message(session, receipt.provider, receipt.provider_message_id)
    target = await _target(
        session,
        _TARGET_BY_MESSAGE,
        {"provider": receipt.provider, "message_id": receipt.provider_message_id},
    )
    now = utcnow()
    if not await _store(session, receipt, target, now):
        result = Result.duplicate
    elif target is None:
        result = Result.waiting
        log.info(
            "receipt %s for unknown message %s %s kept until the message is recorded",
            receipt.event_id,
            receipt.provider,
            receipt.provider_message_id,
        )
    else:
        facts = _Facts(receipt.provider_status, receipt.error_code, receipt.classification)
        result = await _apply(session, target, facts, now)
    metrics.receipts.labels(receipt.provider, result.value).inc()
    return result


async def apply_waiting(session: AsyncSession, attempt: Attempt) -> int:
    """Apply the receipts that arrived before `attempt`'s message id was recorded.

    The caller holds `lock_message` for the id and has flushed the attempt."""
    assert attempt.provider_message_id is not None
    query = (
        select(StoredReceipt)
        .where(
            StoredReceipt.provider == attempt.provider,
            StoredReceipt.provider_message_id == attempt.provider_message_id,
            StoredReceipt.applied_at.is_(None),
        )
        .order_by(StoredReceipt.id)
    )
    waiting = list((await session.execute(query)).scalars())
    if not waiting:
        return 0
    target = await _target(session, _TARGET_BY_ID, {"attempt_id": attempt.id})
    assert target is not None, "the caller flushed the attempt"
    now = utcnow()
    for stored in waiting:
        stored.applied_at = now
        stored.attempt_id = attempt.id
        result = await _apply(session, target, _facts_of(stored), now)
        metrics.receipts_released.labels(stored.provider, result.value).inc()
    await session.flush()
    return len(waiting)


async def report_unmatched(session: AsyncSession) -> int:
    """Count (gauge) and log the receipts that have waited for their message longer than
    UNMATCHED_AFTER: they stay stored (applied_at null) and are applied if it ever comes."""
    cutoff = utcnow() - UNMATCHED_AFTER
    count, oldest = (
        await session.execute(
            select(func.count(), func.min(StoredReceipt.received_at)).where(
                StoredReceipt.applied_at.is_(None), StoredReceipt.received_at < cutoff
            )
        )
    ).one()
    metrics.receipts_unmatched.set(count)
    if count:
        log.warning(
            "%d receipts have found no message for over %s (oldest received %s)",
            count,
            UNMATCHED_AFTER,
            oldest,
        )
    return int(count)


# Statements built once (their SQL is compiled once per process, not per receipt).
_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
_TARGET = (
    select(Attempt, Recipient, Campaign.status, School)
    .join(Recipient, Recipient.id == Attempt.recipient_id)
    .join(Campaign, Campaign.id == Recipient.campaign_id)
    .join(School, School.id == Recipient.school_id)
    .with_for_update(of=Recipient)
)
_TARGET_BY_MESSAGE = _TARGET.where(
    Attempt.provider == bindparam("provider"),
    Attempt.provider_message_id == bindparam("message_id"),
)
_TARGET_BY_ID = _TARGET.where(Attempt.id == bindparam("attempt_id"))
_LATEST = select(func.max(Attempt.id)).where(Attempt.recipient_id == bindparam("recipient_id"))
_INSERT = (
    insert(cast(Table, StoredReceipt.__table__))
    .on_conflict_do_nothing()
    .returning(StoredReceipt.id)
)


async def _target(
    session: AsyncSession,
    query: Select[Attempt, Recipient, CampaignStatus, School],
    params: dict[str, Any],
) -> _Target | None:
    row = (await session.execute(query, params)).one_or_none()
    if row is None:
        return None
    attempt, recipient, campaign_status, school = row
    return _Target(attempt, recipient, campaign_status, school)


async def _store(
    session: AsyncSession, receipt: Receipt, target: _Target | None, now: datetime
) -> bool:
    """Insert the receipt unless its event is stored already; whether it was new."""
    classification = receipt.classification
    inserted = await session.execute(
        _INSERT,
        {
            "provider": receipt.provider,
            "event_id": receipt.event_id,
            "provider_message_id": receipt.provider_message_id,
            "provider_status": receipt.provider_status,
            "error_code": receipt.error_code,
            "reason": classification.reason if classification else None,
            "soft": classification.soft if classification else None,
            "definition": classification.definition_index if classification else None,
            "occurred_at": receipt.occurred_at,
            "applied_at": now if target is not None else None,
            "attempt_id": target.attempt.id if target is not None else None,
        },
    )
    return inserted.scalar_one_or_none() is not None


def _facts_of(stored: StoredReceipt) -> _Facts:
    classification = None
    if stored.reason is not None:
        classification = Classification(stored.reason, bool(stored.soft), stored.definition or 0)
    return _Facts(stored.provider_status, stored.error_code, classification)


# A failure receipt without a classification (none stored): unknown, hard.
UNKNOWN_FAILURE = Classification("unknown", soft=False)


async def _apply(session: AsyncSession, target: _Target, facts: _Facts, now: datetime) -> Result:
    """Move the attempt forward if the receipt does (else it is stale), then the recipient as
    the status rules say; flushes."""
    attempt, recipient = target.attempt, target.recipient
    phase = rules.phase_of(facts.provider_status)
    if phase is None or not rules.advance(rules.phase_of(attempt.status), phase):
        return Result.stale
    # The attempt shows the receipt that moved it furthest, its error code included (a late
    # `delivered` clears the code of the failure it overrides): the same whatever the order.
    attempt.status = facts.provider_status
    attempt.error_code = facts.error_code
    attempt.updated_at = now
    classification = None
    if phase is rules.Phase.failed:
        classification = facts.classification or UNKNOWN_FAILURE
    retry_allowed = policy.retry_allowed(target.school, recipient, now)
    state = recipients.state_of(recipient)

    def decide(latest_attempt: bool) -> rules.Change | None:
        return rules.on_receipt(
            state,
            target.campaign_status,
            phase,
            classification,
            facts.error_code,
            latest_attempt=latest_attempt,
            retry_allowed=retry_allowed,
        )

    change = decide(latest_attempt=True)
    if change != decide(latest_attempt=False):
        # Only now does it matter whether this attempt is the recipient's latest. Asked in
        # a statement of its own, after the recipient's lock was granted: an attempt
        # created while we waited for that lock is seen.
        latest = await session.execute(_LATEST, {"recipient_id": recipient.id})
        change = decide(latest_attempt=latest.scalar_one() == attempt.id)
    if change is not None:
        due = policy.retry_due(target.school, recipient, now) if change.retry else None
        recipients.apply(recipient, change, due)
    await session.flush()
    if classification is not None and classification.reason == "opted_out":
        # The provider says the number opted out (e.g. Twilio 21610): as at create time.
        await opt_outs.opt_out(
            session,
            recipient.school_id,
            recipient.phone,
            source=OptOutSource.provider,
            campaign_id=recipient.campaign_id,
        )
    if change is not None and change.state.status in rules.FINAL:
        await campaigns.complete_if_done(session, recipient.campaign_id)
    return Result.applied

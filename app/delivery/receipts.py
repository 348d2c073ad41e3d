"""Applying delivery receipts, whatever the provider: stored once, applied through the
status rules, kept waiting when their message id is not known yet (SPEC §3, §6).

Webhook endpoints and the simulator both call `ingest`; the delivery engine calls
`apply_waiting` the moment it records a provider message id.
"""

from __future__ import annotations

import enum
import logging
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.campaigns import service as campaigns
from app.delivery import policy
from app.delivery import status as rules
from app.kit.clock import utcnow
from app.models import Attempt, Campaign, Recipient, School
from app.models import Receipt as StoredReceipt
from app.providers.base import Classification, Receipt
from app.recipients import service as recipients

log = logging.getLogger(__name__)


class Result(enum.StrEnum):
    applied = "applied"  # moved its attempt forward (and the recipient, if the rules say so)
    stale = "stale"  # late or out of order for its attempt: kept in history only
    duplicate = "duplicate"  # the same event was received before
    waiting = "waiting"  # its message id is not known yet; applied when it is


async def lock_message(session: AsyncSession, provider: str, provider_message_id: str) -> None:
    """Serialise everything that concerns one provider message id, so a receipt and the
    transaction that records the id can never miss each other."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"{provider}:{provider_message_id}"},
    )


async def ingest(session: AsyncSession, receipt: Receipt) -> Result:
    """Store a receipt once (by provider event id) and apply it if its message is known."""
    await lock_message(session, receipt.provider, receipt.provider_message_id)
    classification = receipt.classification
    stored_id = (
        await session.execute(
            insert(StoredReceipt)
            .values(
                provider=receipt.provider,
                event_id=receipt.event_id,
                provider_message_id=receipt.provider_message_id,
                provider_status=receipt.provider_status,
                error_code=receipt.error_code,
                reason=classification.reason if classification else None,
                soft=classification.soft if classification else None,
                definition=classification.definition_index if classification else None,
                occurred_at=receipt.occurred_at,
            )
            .on_conflict_do_nothing()
            .returning(StoredReceipt.id)
        )
    ).scalar_one_or_none()
    if stored_id is None:
        result = Result.duplicate
    else:
        stored = await session.get_one(StoredReceipt, stored_id)
        attempt = await _attempt(session, receipt.provider, receipt.provider_message_id)
        result = Result.waiting if attempt is None else await _apply(session, stored, attempt)
    metrics.receipts.labels(receipt.provider, result.value).inc()
    if result is Result.waiting:
        log.info(
            "receipt %s for unknown message %s %s kept until the message is recorded",
            receipt.event_id,
            receipt.provider,
            receipt.provider_message_id,
        )
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
    for stored in waiting:
        await _apply(session, stored, attempt)
    return len(waiting)


async def _attempt(session: AsyncSession, provider: str, message_id: str) -> Attempt | None:
    query = select(Attempt).where(
        Attempt.provider == provider, Attempt.provider_message_id == message_id
    )
    return (await session.execute(query)).scalar_one_or_none()


UNKNOWN_FAILURE = Classification("unknown", soft=False)


def _classification(stored: StoredReceipt) -> Classification:
    """What a failure receipt means (as classified when it arrived)."""
    if stored.reason is None:
        return UNKNOWN_FAILURE
    return Classification(stored.reason, bool(stored.soft), stored.definition or 0)


async def _apply(session: AsyncSession, stored: StoredReceipt, attempt: Attempt) -> Result:
    now = utcnow()
    stored.applied_at = now
    stored.attempt_id = attempt.id
    phase = rules.phase_of(stored.provider_status)
    if phase is None or not rules.advance(rules.phase_of(attempt.status), phase):
        await session.flush()
        return Result.stale
    attempt.status = stored.provider_status
    attempt.error_code = stored.error_code or attempt.error_code
    attempt.updated_at = now

    row = (
        await session.execute(
            select(Recipient, Campaign.status, School)
            .join(Campaign, Campaign.id == Recipient.campaign_id)
            .join(School, School.id == Recipient.school_id)
            .where(Recipient.id == attempt.recipient_id)
            .with_for_update(of=Recipient)
        )
    ).one()
    recipient, campaign_status, school = row
    latest_id = (
        await session.execute(
            select(func.max(Attempt.id)).where(Attempt.recipient_id == recipient.id)
        )
    ).scalar_one()
    change = rules.on_receipt(
        recipients.state_of(recipient),
        campaign_status,
        phase,
        _classification(stored) if phase is rules.Phase.failed else None,
        stored.error_code,
        latest_attempt=attempt.id == latest_id,
        retry_allowed=policy.retry_allowed(school, recipient, now),
    )
    if change is not None:
        due: datetime | None = None
        if change.retry:
            due = policy.retry_due(school, recipient, now)
        recipients.apply(recipient, change, due)
    await session.flush()
    if change is not None and change.state.status in rules.FINAL:
        await campaigns.complete_if_done(session, recipient.campaign_id)
    return Result.applied

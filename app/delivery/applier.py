"""The receipt applier: delivery receipts, whatever the provider, kept in the inbox as they
arrive (`app.delivery.inbox`), applied here through the status rules (`app.sending.status`).

`apply_stored`, run in a loop wherever a delivery
worker runs (`app.workers.receipt_applier`: `campanile worker`, and `campanile serve` unless
--no-worker), applies stored receipts whose message id is known, a batch per transaction,
in the order they arrived. A receipt that comes before the send's transaction has recorded
its message id simply stays stored until that transaction commits; the next batch after it
applies the receipt. Nothing is dropped and nothing waits on a lock:
the two sides never need to see each other inside one transaction.

Exactly once: a receipt is marked applied in the transaction that applies it, and a batch
takes its receipts FOR UPDATE SKIP LOCKED, so concurrent appliers never share one. Two
receipts of one message in two concurrent batches serialise on the recipient's row lock,
and the batch reads its attempts and recipients in a statement issued after its locks are
granted (READ COMMITTED: it sees what the other batch committed).

Receipts that never find their message stay stored (applied_at null); `report_unmatched`
counts and logs those older than UNMATCHED_AFTER, and they are applied if it ever comes.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BindParameter, bindparam, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.campaigns import service as campaigns
from app.delivery import sql
from app.kit.clock import utcnow
from app.models import Attempt, Campaign, CampaignStatus, Recipient, School, StoredReceipt
from app.opt_outs import service as opt_outs
from app.sending import policy
from app.sending import status as rules
from app.sending.outcomes import Classification
from app.sending.reasons import OPTED_OUT
from app.sending.state import apply_change, state_of

log = logging.getLogger(__name__)

# A receipt still waiting for its message this long after it arrived most likely never will
# find it (a send is recorded seconds after the provider answers; a crashed worker's
# attempt is recovered once its lease, 300 s by default, runs out).
UNMATCHED_AFTER = timedelta(minutes=15)

# Receipts applied per transaction.
BATCH = 500


class Result(enum.StrEnum):
    applied = "applied"  # moved its attempt forward (and the recipient, if the rules say so)
    stale = "stale"  # late or out of order for its attempt: kept in history only


async def apply_stored(session: AsyncSession, limit: int = BATCH) -> list[Result]:
    """Apply up to `limit` stored receipts whose message is known, oldest first, in the
    caller's transaction; what each did, in that order (empty: nothing to apply)."""
    due = (await session.execute(_DUE.limit(limit))).all()
    if not due:
        return []
    attempt_of = {row.id: row.attempt_id for row in due}
    recipient_ids = sorted({row.recipient_id for row in due})
    opted_out = sorted({row.recipient_id for row in due if row.reason == OPTED_OUT})
    # The recipients' locks first, in the lock order (`app.sending.locks`), those an
    # opt-out will fail included; everything read after them.
    await session.execute(sql.LOCK_APPLIED, {"ids": recipient_ids, "opted_out": opted_out})
    targets = await _targets(session, set(attempt_of.values()))
    found = await session.execute(_LATEST, {"ids": recipient_ids})
    latest = {row.recipient_id: row.latest for row in found}
    stored = (await session.execute(_STORED, {"ids": list(attempt_of)})).scalars().all()
    now = utcnow()
    effects = _Effects()
    results: list[Result] = []
    for receipt in stored:
        target = targets[attempt_of[receipt.id]]
        receipt.applied_at = now
        receipt.attempt_id = target.attempt.id
        is_latest = latest.get(target.recipient.id) == target.attempt.id
        result = _apply(target, _facts_of(receipt), is_latest, now, effects)
        metrics.receipts_applied.labels(receipt.provider, result.value).inc()
        results.append(result)
    await session.flush()
    await opt_outs.opted_out_at_provider(session, effects.opted_out)
    await campaigns.complete_finished(session, effects.finished)
    return results


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
# Stored receipts whose message is known: (receipt id, attempt id, recipient id). The
# attempt is looked up per receipt (LATERAL: a nested loop over the queue's index, oldest
# first, each receipt one probe of the attempts' unique index) so that a batch costs the
# same whatever the backlog; a plain join may be planned as a hash join over every attempt
# once many receipts wait.
_MATCH = (
    select(Attempt.id, Attempt.recipient_id)
    .where(
        Attempt.provider == StoredReceipt.provider,
        Attempt.provider_message_id == StoredReceipt.provider_message_id,
    )
    .limit(1)  # unique anyway; and a subquery with a LIMIT is never flattened into a join
    .lateral("match")
)
_DUE = (
    select(
        StoredReceipt.id,
        _MATCH.c.id.label("attempt_id"),
        _MATCH.c.recipient_id,
        StoredReceipt.reason,
    )
    .join(_MATCH, true())
    .where(StoredReceipt.applied_at.is_(None))
    .order_by(StoredReceipt.id)
    .with_for_update(of=StoredReceipt, skip_locked=True)
)
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
# Each recipient's latest attempt: a receipt for an older one never reschedules it.
_LATEST = (
    select(Attempt.recipient_id, func.max(Attempt.id).label("latest"))
    .where(Attempt.recipient_id.in_(_IDS))
    .group_by(Attempt.recipient_id)
)
_STORED = select(StoredReceipt).where(StoredReceipt.id.in_(_IDS)).order_by(StoredReceipt.id)
_TARGETS = (
    select(Attempt, Recipient, Campaign.status, School)
    .join(Recipient, Recipient.id == Attempt.recipient_id)
    .join(Campaign, Campaign.id == Recipient.campaign_id)
    .join(School, School.id == Recipient.school_id)
    .where(Attempt.id.in_(_IDS))
)


@dataclass(frozen=True, slots=True)
class _Facts:
    """What a stored receipt says."""

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


@dataclass(slots=True)
class _Effects:
    """What a batch does once its receipts are applied."""

    opted_out: list[Recipient] = field(default_factory=list)
    finished: set[uuid.UUID] = field(default_factory=set)


async def _targets(session: AsyncSession, attempt_ids: Iterable[int]) -> dict[int, _Target]:
    rows = await session.execute(_TARGETS, {"ids": list(attempt_ids)})
    return {
        attempt.id: _Target(attempt, recipient, campaign_status, school)
        for attempt, recipient, campaign_status, school in rows
    }


def _facts_of(stored: StoredReceipt) -> _Facts:
    classification = None
    if stored.reason is not None:
        classification = Classification(stored.reason, bool(stored.soft), stored.definition or 0)
    return _Facts(stored.provider_status, stored.error_code, classification)


# A failure receipt without a classification (none stored): unknown, hard.
UNKNOWN_FAILURE = Classification("unknown", soft=False)


def _apply(
    target: _Target, facts: _Facts, latest_attempt: bool, now: datetime, effects: _Effects
) -> Result:
    """Move the attempt forward if the receipt does (else it is stale), then the recipient as
    the status rules say; what follows from it goes to `effects`."""
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
    change = rules.on_receipt(
        state_of(recipient),
        target.campaign_status,
        phase,
        classification,
        facts.error_code,
        latest_attempt=latest_attempt,
        retry_allowed=policy.retry_allowed(target.school, recipient, now),
    )
    if change is not None:
        due = policy.retry_due(target.school, recipient, now) if change.retry else None
        apply_change(recipient, change, due)
        if change.state.status in rules.FINAL:
            effects.finished.add(recipient.campaign_id)
    if classification is not None and classification.reason == OPTED_OUT:
        effects.opted_out.append(recipient)
    return Result.applied

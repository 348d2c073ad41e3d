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

A batch reads plain rows by column name and writes back in one statement over arrays
(`app.delivery.sql.receipts`), as the delivery engine's claim and record do: hundreds of
receipts a batch, where ORM entities and per-row UPDATEs would cost several times the SQL.

Receipts that never find their message stay stored (applied_at null); `report_unmatched`
counts and logs those older than UNMATCHED_AFTER, and they are applied if it ever comes.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.campaigns import service as campaigns
from app.delivery import sql
from app.delivery.school_cache import SchoolCache, Versions
from app.delivery.sql import AnyRow, AttemptRow, RecipientRow
from app.kit.clock import utcnow
from app.models import School, StoredReceipt
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


async def apply_stored(
    session: AsyncSession, limit: int = BATCH, schools: SchoolCache | None = None
) -> list[Result]:
    """Apply up to `limit` stored receipts whose message is known, oldest first, in the
    caller's transaction; what each did, in that order (empty: nothing to apply).
    `schools`: the schools as the caller last loaded them (a loop's cache), else loaded."""
    connection = await session.connection()  # plain rows, as in the claim and the record
    due = (await connection.execute(sql.DUE_RECEIPTS, {"limit": limit})).all()
    if not due:
        return []
    recipient_ids = sorted({row.recipient_id for row in due})
    opted_out = sorted({row.recipient_id for row in due if row.reason == OPTED_OUT})
    # The recipients' locks first, in the lock order (`app.sending.locks`), those an
    # opt-out will fail included; everything read after them.
    await connection.execute(sql.LOCK_APPLIED, {"ids": recipient_ids, "opted_out": opted_out})
    found = await connection.execute(
        sql.RECEIPT_TARGETS,
        {"ids": list({row.attempt_id for row in due}), "recipient_ids": recipient_ids},
    )
    targets = await _targets(session, found, schools or SchoolCache())
    now = utcnow()
    effects = _Effects()
    results: list[Result] = []
    counts: Counter[tuple[str, Result]] = Counter()
    for receipt in due:
        result = _apply(targets[receipt.attempt_id], receipt, now, effects)
        counts[receipt.provider, result] += 1
        results.append(result)
    for (provider, result), count in counts.items():
        metrics.receipts_applied.labels(provider, result.value).inc(count)
    moved, changed = list(effects.moved.values()), list(effects.changed.values())
    await connection.execute(*sql.write_applied(due, moved, changed, now))
    if effects.opted_out:  # (rare: not a query a batch for nothing)
        # After the writes: the opt-out cancels the number's other waiting recipients as
        # they now stand (this batch's included, their rows locked above; the session holds
        # no entity of theirs, so it reads them as written).
        await opt_outs.opted_out_at_provider(session, effects.opted_out)
    await campaigns.complete_finished(session, effects.finished)
    return results


async def report_unmatched(session: AsyncSession) -> int:
    """Count (gauge) and log the receipts that have waited for their message longer than
    UNMATCHED_AFTER: they stay stored (applied_at null) and are applied if it ever comes."""
    cutoff = utcnow() - UNMATCHED_AFTER
    found = (
        await session.execute(
            select(
                func.count().label("waiting"), func.min(StoredReceipt.received_at).label("oldest")
            ).where(StoredReceipt.applied_at.is_(None), StoredReceipt.received_at < cutoff)
        )
    ).one()
    count, oldest = found.waiting, found.oldest
    metrics.receipts_unmatched.set(count)
    if count:
        log.warning(
            "%d receipts have found no message for over %s (oldest received %s)",
            count,
            UNMATCHED_AFTER,
            oldest,
        )
    return int(count)


@dataclass(frozen=True, slots=True)
class _Target:
    """The attempt a receipt is about, with its recipient (locked) and their context. One
    attempt's receipts share its target, and one recipient's attempts their recipient: each
    receipt sees what the batch's earlier ones did."""

    attempt: AttemptRow
    recipient: RecipientRow
    latest: bool  # the recipient's latest attempt
    school: School


@dataclass(slots=True)
class _Effects:
    """What a batch does once its receipts are applied: the attempts moved forward and the
    recipients changed (by id, each written back once as it ends up), the opt-outs, the
    campaigns that may be complete."""

    moved: dict[int, AttemptRow] = field(default_factory=dict)
    changed: dict[int, RecipientRow] = field(default_factory=dict)
    opted_out: list[RecipientRow] = field(default_factory=list)
    finished: set[uuid.UUID] = field(default_factory=set)


async def _targets(
    session: AsyncSession, found: CursorResult[*tuple[Any, ...]], schools: SchoolCache
) -> dict[int, _Target]:
    """The targets of `TARGETS`' rows, by attempt id."""
    recipient_of = RecipientRow.reader(found.keys())
    rows = found.all()
    recipients: dict[int, RecipientRow] = {}
    versions: dict[uuid.UUID, Versions] = {}
    for row in rows:
        if row.id not in recipients:
            recipients[row.id] = recipient_of(row)
            versions[row.school_id] = (row.school_version, row.account_version)
    loaded, _ = await schools.get(session, versions)
    targets = {}
    for row in rows:
        recipient = recipients[row.id]
        school = loaded[recipient.school_id]
        targets[row.attempt_id] = _Target(sql.attempt_of(row), recipient, row.is_latest, school)
    return targets


def _classification(receipt: AnyRow) -> Classification | None:
    """What a `DUE` row says of its failure, if it classified it."""
    if receipt.reason is None:
        return None
    return Classification(receipt.reason, bool(receipt.soft), receipt.definition or 0)


# A failure receipt without a classification (none stored): unknown, hard.
UNKNOWN_FAILURE = Classification("unknown", soft=False)


def _apply(target: _Target, receipt: AnyRow, now: datetime, effects: _Effects) -> Result:
    """Move the attempt forward if the receipt (a `DUE` row) does (else it is stale), then
    the recipient as the status rules say; what follows from it goes to `effects`."""
    attempt, recipient, school = target.attempt, target.recipient, target.school
    provider_status, error_code = receipt.provider_status, receipt.error_code
    if attempt.provider_message_id is None:
        # Found by the attempt its URL named, whose create answer was lost: now its id is
        # known (README, "What each provider can promise about duplicates").
        attempt.provider_message_id = receipt.provider_message_id
        effects.moved[attempt.id] = attempt
    phase = rules.phase_of(provider_status)
    if phase is None or not rules.advance(rules.phase_of(attempt.status), phase):
        return Result.stale
    # The attempt shows the receipt that moved it furthest, its error code included (a late
    # `delivered` clears the code of the failure it overrides): the same whatever the order.
    attempt.status = provider_status
    attempt.error_code = error_code
    effects.moved[attempt.id] = attempt
    classification = None
    if phase is rules.Phase.failed:
        classification = _classification(receipt) or UNKNOWN_FAILURE
    change = rules.on_receipt(
        state_of(recipient),
        recipient.campaign_status,
        phase,
        classification,
        error_code,
        latest_attempt=target.latest,
        retry_allowed=policy.retry_allowed(school, recipient, now),
    )
    if change is not None:
        due = policy.retry_due(school, recipient, now) if change.retry else None
        apply_change(recipient, change, due, now)
        effects.changed[recipient.id] = recipient
        if change.state.status in rules.FINAL:
            effects.finished.add(recipient.campaign_id)
    if classification is not None and classification.reason == OPTED_OUT:
        effects.opted_out.append(recipient)
    return Result.applied

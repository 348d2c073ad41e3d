"""The receipts' SQL (`app.delivery.sql`): the inbox's INSERT (`app.delivery.inbox`), and
the receipt applier's statements (`app.delivery.applier`), built as the claim's and the
record's are: plain rows read by column name, and one statement over `unnest` arrays for
everything a batch writes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    TextClause,
    any_,
    bindparam,
    func,
    literal,
    select,
    text,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY

from app.delivery.sql.reads import BATCH_AND_WAITING
from app.delivery.sql.shapes import RECIPIENT_COLUMNS, AnyRow, AttemptRow, RecipientRow, columns
from app.delivery.sql.writes import CHANGED_BY_RULES, arrays, unnest, update_recipients
from app.models import Attempt, Campaign, ProviderAccount, Recipient, School, StoredReceipt

# A receipt kept for the applier, once per provider event (`$2`, the event id): the id it
# is kept under, none if the same event came before.
KEEP_RECEIPT = """
    INSERT INTO receipts (provider, event_id, provider_message_id, provider_status,
                          error_code, reason, soft, definition, occurred_at, named_attempt_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
    ON CONFLICT DO NOTHING
    RETURNING id
"""

# -- reads -----------------------------------------------------------------------------

# Stored receipts whose attempt is known, oldest first, locked (SKIP LOCKED: concurrent
# appliers never share one): what each says, and its attempt and recipient ids. Its attempt
# is the one holding its message id or, when none does, the one its callback URL named
# (`app.providers.callbacks`: the create call's answer, and the message id with it, may
# have been lost; the receipt then teaches the attempt its id). It is looked up per receipt
# (LATERAL: a nested loop over the queue's index, oldest first, each receipt a probe or two
# of the attempts' unique indexes) so that a batch costs the same whatever the backlog; a
# plain join may be planned as a hash join over every attempt once many receipts wait. A
# receipt never changes once stored (but for being applied, which SKIP LOCKED and the WHERE
# clause, checked again on the row locked, see to), so what it says is read here.
_matches = [
    select(Attempt.id, Attempt.recipient_id, literal(rank).label("rank")).where(
        Attempt.provider == StoredReceipt.provider, where
    )
    for rank, where in enumerate(
        (
            Attempt.provider_message_id == StoredReceipt.provider_message_id,
            Attempt.id == StoredReceipt.named_attempt_id,
        )
    )
]
_match = union_all(*_matches).order_by("rank").limit(1).lateral("match")
DUE_RECEIPTS = (
    select(
        StoredReceipt.id,
        StoredReceipt.provider,
        StoredReceipt.provider_message_id,
        StoredReceipt.provider_status,
        StoredReceipt.error_code,
        StoredReceipt.reason,
        StoredReceipt.soft,
        StoredReceipt.definition,
        _match.c.id.label("attempt_id"),
        _match.c.recipient_id,
    )
    .join(_match, true())
    .where(StoredReceipt.applied_at.is_(None))
    .order_by(StoredReceipt.id)
    .limit(bindparam("limit"))
    .with_for_update(of=StoredReceipt, skip_locked=True)
)

# The message ids that receipts still waiting name for these attempts (`ids`): a recovery
# that finds one knows its hand-over went out, without asking the provider.
NAMED = select(
    StoredReceipt.named_attempt_id, StoredReceipt.provider, StoredReceipt.provider_message_id
).where(
    StoredReceipt.named_attempt_id == any_(bindparam("ids", type_=ARRAY(BigInteger))),
    StoredReceipt.applied_at.is_(None),
)


# The recipients of a batch's receipts (`ids`) and the waiting recipients of the numbers
# of those that opted out (`opted_out`), which the opt-out fails: locked first, in id
# order (`app.sending.locks`), as the record locks its own (`BATCH_AND_WAITING`).
LOCK_APPLIED = (
    select(Recipient.id).where(BATCH_AND_WAITING).order_by(Recipient.id).with_for_update()
)


# Each recipient's latest attempt (a receipt for an older one never reschedules it), found
# by recipient id among the batch's (GROUP BY, never a max() per recipient, which the
# planner may turn into a backward walk of the primary key: see `reads.CLAIM`).
_latest = (
    select(Attempt.recipient_id, func.max(Attempt.id).label("latest"))
    .where(Attempt.recipient_id == any_(bindparam("recipient_ids", type_=ARRAY(BigInteger))))
    .group_by(Attempt.recipient_id)
    .subquery("latest")
)
# The batch's attempts (`ids`), each with its recipient as `RECIPIENT_COLUMNS`, whether
# it is the recipient's latest, and the versions of the school and its provider account
# (`app.delivery.school_cache`). Read once the recipients are locked.
RECEIPT_TARGETS = (
    select(
        Attempt.id.label("attempt_id"),
        Attempt.status.label("attempt_status"),
        Attempt.error_code.label("attempt_error_code"),
        Attempt.provider_message_id.label("attempt_provider_message_id"),
        (_latest.c.latest == Attempt.id).label("is_latest"),
        *RECIPIENT_COLUMNS,
        School.updated_at.label("school_version"),
        ProviderAccount.updated_at.label("account_version"),
    )
    .join(Recipient, Recipient.id == Attempt.recipient_id)
    .join(Campaign, Campaign.id == Recipient.campaign_id)
    .join(School, School.id == Recipient.school_id)
    .outerjoin(ProviderAccount, ProviderAccount.school_id == Recipient.school_id)
    .join(_latest, _latest.c.recipient_id == Recipient.id)
    .where(Attempt.id == any_(bindparam("ids", type_=ARRAY(BigInteger))))
)


def attempt_of(row: AnyRow) -> AttemptRow:
    """The attempt of a `RECEIPT_TARGETS` row (its recipient: `RecipientRow.of`)."""
    return AttemptRow(
        row.attempt_id,
        row.attempt_status,
        row.attempt_error_code,
        row.attempt_provider_message_id,
    )


# -- the write: one statement, over arrays (`unnest`) ----------------------------------

_APPLIED = {"id": "bigint", "attempt_id": "bigint"}
_MOVED = columns(AttemptRow)
# Every receipt of the batch applied (and linked to its attempt), the attempts its
# receipts moved forward or taught their message id (never another: an attempt's id, once
# known, stays), then the recipients they changed.
_WRITE_APPLIED = text(
    f"""
    WITH applied AS (
        UPDATE receipts AS t SET applied_at = :now, attempt_id = v.attempt_id
        FROM {unnest(_APPLIED, "receipt_")}
        WHERE t.id = v.id
    ),
    moved AS (
        UPDATE attempts AS a
        SET status = v.status, error_code = v.error_code,
            provider_message_id = coalesce(a.provider_message_id, v.provider_message_id),
            updated_at = :now
        FROM {unnest(_MOVED, "attempt_")}
        WHERE a.id = v.id
    )
    {update_recipients(CHANGED_BY_RULES)}
    """
)


def write_applied(
    receipts: Sequence[AnyRow],
    moved: Sequence[AttemptRow],
    changed: Sequence[RecipientRow],
    now: datetime,
) -> tuple[TextClause, dict[str, Any]]:
    """The batch's write and its parameters: `receipts` (`DUE_RECEIPTS` rows) applied at `now`, the
    `moved` attempts (moved forward, or taught their message id) and the `changed`
    recipients as they now stand."""
    return _WRITE_APPLIED, {
        **arrays(_APPLIED, receipts, "receipt_"),
        **arrays(_MOVED, moved, "attempt_"),
        **arrays(CHANGED_BY_RULES, changed),
        "now": now,
    }

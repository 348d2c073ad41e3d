"""The reconciliation's SQL (`app.delivery.sql`; `app.delivery.reconcile`, README).

Its queue is the partial index `ix_attempts_unconfirmed` on `attempts (checked_at)`, which
holds only the attempts it may still look up (`app.models.attempt.UNCONFIRMED`): the due
ones are the range `checked_at <= :before` of it, read in order up to a batch, whatever the
size of the table. Its WHERE clause repeats the index's predicate word for word, so that the
planner can prove the index serves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import TextClause, text

from app.delivery.sql.shapes import RecipientRow, columns
from app.delivery.sql.writes import CHANGED_BY_RULES, arrays, unnest, update_recipients
from app.models.attempt import UNCONFIRMED
from app.sending import status as rules

# A recipient waits on its latest attempt's message while it shows Still in Queue or Pending.
_FOLLOWED = ", ".join(f"'{s.value}'" for s in (rules.Status.queued, rules.Status.pending))

# The claim, one statement in a short transaction of its own: the due attempts, oldest
# checked first, locked and skipped if locked (concurrent sweeps never share one, and the
# claim never waits), each marked checked now, so that no other sweep takes it again for
# RECONCILE_AFTER_SECONDS: the lookups that follow, outside any transaction, are this
# sweep's alone. An attempt its recipient no longer follows (a later attempt, a final
# status, an archived campaign) is let go instead (`checked_at` null: out of the index).
# Returned: what the lookup and the overdue rule need, and the versions of the school and
# its provider account (`app.delivery.school_cache`).
CLAIM_DUE = text(
    f"""
    WITH due AS (
        SELECT id, recipient_id FROM attempts
        WHERE checked_at <= CAST(:before AS timestamptz) AND {UNCONFIRMED}
        ORDER BY checked_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ),
    found AS (
        SELECT due.id, r.school_id,
               s.updated_at AS school_version, pa.updated_at AS account_version,
               r.status IN ({_FOLLOWED}) AND c.status <> 'archived'
                   AND NOT EXISTS (SELECT FROM attempts AS later
                                   WHERE later.recipient_id = due.recipient_id
                                     AND later.id > due.id) AS followed
        FROM due
        JOIN recipients AS r ON r.id = due.recipient_id
        JOIN campaigns AS c ON c.id = r.campaign_id
        JOIN schools AS s ON s.id = r.school_id
        LEFT JOIN provider_accounts AS pa ON pa.school_id = r.school_id
    )
    UPDATE attempts AS a
    SET checked_at = CASE WHEN found.followed THEN CAST(:now AS timestamptz) END
    FROM found
    WHERE a.id = found.id
    RETURNING a.id, a.recipient_id, a.provider, a.provider_message_id, a.status,
              a.created_at, found.followed, found.school_id, found.school_version,
              found.account_version
    """
)

# The overdue rule's reads, once the recipients are locked (`reads.record`: in id order):
# the attempts (`ids`) as they are now, and whether each is still its recipient's latest.
OVERDUE_ATTEMPTS = text(
    """
    SELECT a.id, a.status,
           NOT EXISTS (SELECT FROM attempts AS later
                       WHERE later.recipient_id = a.recipient_id AND later.id > a.id)
               AS is_latest
    FROM attempts AS a
    WHERE a.id = ANY(CAST(:ids AS bigint[]))
    """
)


@dataclass(slots=True, frozen=True)
class SettledAttempt:
    """An attempt the overdue rule settled: its status (`sent`, if the lookup said so and
    it did not know yet), and the reconciliation done with it."""

    id: int
    status: str


_SETTLED = columns(SettledAttempt)
# The overdue rule's write: the attempts settled (out of the index), then the recipients.
_WRITE_OVERDUE = text(
    f"""
    WITH settled AS (
        UPDATE attempts AS a SET status = v.status, checked_at = NULL, updated_at = :now
        FROM {unnest(_SETTLED, "attempt_")}
        WHERE a.id = v.id
    )
    {update_recipients(CHANGED_BY_RULES)}
    """
)


def write_overdue(
    settled: Sequence[SettledAttempt], changed: Sequence[RecipientRow], now: datetime
) -> tuple[TextClause, dict[str, Any]]:
    """The overdue rule's write and its parameters."""
    return _WRITE_OVERDUE, {
        **arrays(_SETTLED, settled, "attempt_"),
        **arrays(CHANGED_BY_RULES, changed),
        "now": now,
    }

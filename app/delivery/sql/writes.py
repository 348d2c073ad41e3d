"""The worker's writes (`app.delivery.sql`): one statement for all a batch changes, over
arrays (`unnest`), its columns and their types taken from the row shapes (`columns`)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import TextClause, text

from app.delivery.sql.shapes import NewAttempt, RecipientRow, RecoveredAttempt, SendSlots, columns
from app.models.attempt import UNRESOLVED
from app.sending import status as rules
from app.sending.state import STATE_COLUMNS, state_values


def unnest(columns: Mapping[str, str], prefix: str = "") -> str:
    """`unnest(...) AS v (...)` over one array parameter per column (`prefix` + name)."""
    params = ", ".join(f"CAST(:{prefix}{name} AS {kind}[])" for name, kind in columns.items())
    return f"unnest({params}) AS v ({', '.join(columns)})"


def arrays(columns: Iterable[str], rows: Sequence[Any], prefix: str = "") -> dict[str, list[Any]]:
    """The parameters of `unnest`: each column's values across `rows` (read by name)."""
    return {f"{prefix}{name}": [getattr(row, name) for row in rows] for name in columns}


# A `RecipientRow`'s columns that the worker may change, with their types: written back
# whole, one statement for a batch (`updated_at` is the statement's `now`). Its state's
# columns are those `app.sending.state` writes.
WRITTEN = columns(
    RecipientRow,
    "id",
    *STATE_COLUMNS,
    "attempts",
    "next_attempt_at",
    "first_attempt_at",
    "claimed_at",
    "claimed_by",
    "claimed_attempt_id",
)

# The columns a status-rules change writes (`app.sending.state.apply_change`): the state and
# the next attempt. What a receipt or the overdue rule changes.
CHANGED_BY_RULES = columns(RecipientRow, "id", *STATE_COLUMNS, "next_attempt_at")


def update_recipients(columns: Mapping[str, str]) -> str:
    """An UPDATE of recipients by `id` to the `columns` of `unnest`'s arrays, and their
    `updated_at` to the statement's `now`."""
    assigned = ", ".join(f"{name} = v.{name}" for name in columns if name != "id")
    return f"""
    UPDATE recipients AS r SET {assigned}, updated_at = :now
    FROM {unnest(columns)}
    WHERE r.id = v.id
"""


UPDATE_RECIPIENTS = update_recipients(WRITTEN)

# The claim's write, one statement of the parts a claim has: the recipients settled without
# a hand-over (rare, written whole), the send slots of the accounts under a rate, and the
# leased recipients, all into one state, each with its own attempt count and times. A part
# with nothing to write is left out of the statement, not run over empty arrays.
_LEASED = columns(
    RecipientRow, "id", "attempts", "first_attempt_at", "claimed_at", "claimed_attempt_id"
)
_LEASING = ", ".join(f"{name} = :leased_{name}" for name in STATE_COLUMNS)
_SLOTS = columns(SendSlots)
_CLAIM_PARTS = {
    "settled": UPDATE_RECIPIENTS,
    "slots": f"""
    UPDATE provider_accounts AS a
    SET next_send_at = v.next_send_at, deferred_until = v.deferred_until
    FROM {unnest(_SLOTS, "slots_")}
    WHERE a.school_id = v.school_id
""",
    "leased": f"""
    UPDATE recipients AS r
    SET {_LEASING}, next_attempt_at = :lease_until,
        attempts = v.attempts, first_attempt_at = v.first_attempt_at,
        claimed_at = v.claimed_at, claimed_attempt_id = v.claimed_attempt_id,
        claimed_by = :claim, updated_at = :now
    FROM {unnest(_LEASED, "leased_")}
    WHERE r.id = v.id
""",
}


def _claim_write(parts: Sequence[str]) -> TextClause:
    """The statement of those parts: the last one's UPDATE after the others' as CTEs."""
    *before, last = parts
    ctes = ", ".join(f"{name} AS ({_CLAIM_PARTS[name]})" for name in before)
    return text(f"WITH {ctes} {_CLAIM_PARTS[last]}" if ctes else _CLAIM_PARTS[last])


# Each statement a claim may send, by the parts it has (in `_CLAIM_PARTS`' order).
_CLAIM_WRITES = {
    parts: _claim_write(parts)
    for present in itertools.product((False, True), repeat=len(_CLAIM_PARTS))
    if (parts := tuple(name for name, on in zip(_CLAIM_PARTS, present, strict=True) if on))
}


def write_claim(
    changed: Sequence[RecipientRow],
    leased: Sequence[RecipientRow],
    leasing: rules.State | None,
    lease_until: datetime,
    claim: uuid.UUID,
    slots: Sequence[SendSlots],
    now: datetime,
) -> tuple[TextClause, dict[str, Any]] | None:
    """The claim's write and its parameters: `changed` rows whole, `leased` ones into
    `leasing` with the lease, the accounts' `slots`; None when there is nothing to write."""
    parts: list[str] = []
    params: dict[str, Any] = {}
    if changed:
        parts.append("settled")
        params.update(arrays(WRITTEN, changed), now=now)
    if slots:
        parts.append("slots")
        params.update(arrays(_SLOTS, slots, "slots_"))
    if leased:
        assert leasing is not None
        parts.append("leased")
        params.update(arrays(_LEASED, leased, "leased_"))
        params.update({f"leased_{name}": value for name, value in state_values(leasing).items()})
        params.update(lease_until=lease_until, claim=claim, now=now)
    if not parts:
        return None
    return _CLAIM_WRITES[tuple(parts)], params


_NEW = columns(NewAttempt)
_RECOVERED = columns(RecoveredAttempt)
# The record's writes, one statement: the attempts recovered (the answer is written only
# while the attempt's outcome is still unknown: a receipt naming it may have settled it
# since; an accepted one keeps the error code it had), the new attempts under the ids they
# were claimed with (an attempt already recorded, by a worker that took the hand-over over,
# or a message id already held, is not recorded twice), then the recipients.
_UNRESOLVED = ", ".join(f"'{status}'" for status in UNRESOLVED)
_WRITE_RECORD = text(
    f"""
    WITH recovered AS (
        UPDATE attempts AS a
        SET provider_message_id = coalesce(v.provider_message_id, a.provider_message_id),
            status = CASE WHEN a.status IN ({_UNRESOLVED}) THEN v.status ELSE a.status END,
            error_code = CASE WHEN v.failed AND a.status IN ({_UNRESOLVED})
                              THEN v.error_code ELSE a.error_code END,
            updated_at = :now
        FROM {unnest(_RECOVERED, "recovered_")}
        WHERE a.id = v.id
    ),
    created AS (
        INSERT INTO attempts ({", ".join(_NEW)}, updated_at)
        SELECT {", ".join(f"v.{name}" for name in _NEW)}, :now
        FROM {unnest(_NEW, "new_")}
        ON CONFLICT DO NOTHING
    )
    {UPDATE_RECIPIENTS}
    """
)


def write_record(
    rows: Sequence[RecipientRow],
    created: Sequence[NewAttempt],
    recovered: Sequence[RecoveredAttempt],
    now: datetime,
) -> tuple[TextClause, dict[str, Any]]:
    """The record's write and its parameters."""
    return _WRITE_RECORD, {
        **arrays(WRITTEN, rows),
        **arrays(_NEW, created, "new_"),
        **arrays(_RECOVERED, recovered, "recovered_"),
        "now": now,
    }

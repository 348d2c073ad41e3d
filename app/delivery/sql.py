"""The delivery worker's hand-written SQL and the row shapes it reads, in one place.

Claim and record handle hundreds of recipients a cycle, so they read plain rows with the
columns they need (`RecipientRow`, not ORM entities), always by column name, and write each
kind of change back in one statement (`write_claim`, `write_record`): the ORM's identity
map and unit of work cost several times the SQL itself at that size. The rare paths
(opt-outs, completion, loading a school that changed) keep the ORM.

Each column list is written once: a row shape's fields name its columns, and the UPDATE
and INSERT statements over `unnest` arrays are built from one mapping of column to type.
The receipt applier's statements, built the same way, have a module of their own
(`app.delivery.sql_applier`).
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Row,
    Select,
    TextClause,
    Uuid,
    and_,
    any_,
    bindparam,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY, distinct_on
from sqlalchemy.orm import aliased

from app.models import Attempt, Campaign, CampaignStatus, ProviderAccount, Recipient, School
from app.sending import status as rules

# -- row shapes ------------------------------------------------------------------------

# A result row of the statements below, read by column name.
AnyRow = Row[*tuple[Any, ...]]


@dataclass(slots=True, eq=False)
class RecipientRow:
    """A locked recipient's columns that the worker reads and writes: changed in place,
    written back by `write_claim` or `write_record`. Its fields are the columns' names."""

    id: int
    campaign_id: uuid.UUID
    school_id: uuid.UUID
    phone: str
    status: str
    failed_reason: str | None
    failed_definition: int
    provider_error_code: str | None
    attempts: int
    next_attempt_at: datetime | None
    first_attempt_at: datetime | None
    claimed_at: datetime | None
    claimed_by: uuid.UUID | None
    updated_at: datetime
    campaign_status: CampaignStatus

    @classmethod
    def of(cls, row: AnyRow) -> RecipientRow:
        """The recipient of a result row that selected `RECIPIENT_COLUMNS` (by name)."""
        return cls(*(getattr(row, name) for name in _RECIPIENT_FIELDS))

    @classmethod
    def reader(cls, keys: Iterable[str]) -> Callable[[AnyRow], RecipientRow]:
        """`of` for every row of a result whose columns are `keys` (`Result.keys()`), each
        column found by its name once for them all rather than once a row: hundreds of
        rows a batch, and a row's attribute costs as much as the rest of `of`."""
        index = {key: i for i, key in enumerate(keys)}
        columns = operator.itemgetter(*(index[name] for name in _RECIPIENT_FIELDS))
        return lambda row: cls(*columns(row))


_RECIPIENT_FIELDS = tuple(f.name for f in fields(RecipientRow))
# `RecipientRow`'s columns, named as its fields.
RECIPIENT_COLUMNS = (
    *(getattr(Recipient, name) for name in _RECIPIENT_FIELDS[:-1]),
    Campaign.status.label("campaign_status"),
)


@dataclass(frozen=True, slots=True)
class Previous:
    """A recipient's latest attempt, as the claim needs it."""

    id: int
    provider: str
    status: str
    created_at: datetime

    @classmethod
    def of(cls, row: AnyRow) -> Previous | None:
        """The latest attempt in a claimed row (`CLAIM`), if the recipient has one."""
        if row.previous_id is None:
            return None
        return cls(
            row.previous_id, row.previous_provider, row.previous_status, row.previous_created_at
        )


# -- the claim -------------------------------------------------------------------------

# Due recipients, locked, as `RECIPIENT_COLUMNS` followed by what the hand-over needs (the
# campaign's body, the merge fields), the recipient's latest attempt (`Previous`), and the
# versions of its school and provider account (`app.delivery.school_cache`).
# The latest attempts are found by recipient id among the due ones (DISTINCT ON), never
# with ORDER BY id DESC LIMIT 1 per recipient: with the attempts table's statistics
# behind its growth the planner may walk the primary key backwards for that, through
# every attempt for a recipient that has none.
_due = (
    select(
        *RECIPIENT_COLUMNS,
        Campaign.body,
        Recipient.first_name,
        Recipient.last_name,
        Recipient.fields,
        School.updated_at.label("school_version"),
        ProviderAccount.updated_at.label("account_version"),
    )
    .join(Campaign, Campaign.id == Recipient.campaign_id)
    .join(School, School.id == Recipient.school_id)
    .outerjoin(ProviderAccount, ProviderAccount.school_id == Recipient.school_id)
    .where(Recipient.next_attempt_at <= bindparam("now"))
    .order_by(Recipient.next_attempt_at)
    .limit(bindparam("limit"))
    .with_for_update(of=Recipient, skip_locked=True)
    .cte("due")
)
_latest = (
    select(
        Attempt.recipient_id,
        Attempt.id.label("previous_id"),
        Attempt.provider.label("previous_provider"),
        Attempt.status.label("previous_status"),
        Attempt.created_at.label("previous_created_at"),
    )
    # A first hand-over (no attempt counted yet) has no attempt to look for.
    .where(Attempt.recipient_id.in_(select(_due.c.id).where(_due.c.attempts > 0)))
    .order_by(Attempt.recipient_id, Attempt.id.desc())
    .ext(distinct_on(Attempt.recipient_id))
    .subquery("latest")
)
CLAIM = (
    select(
        *_due.c,
        _latest.c.previous_id,
        _latest.c.previous_provider,
        _latest.c.previous_status,
        _latest.c.previous_created_at,
    )
    .select_from(_due)
    .outerjoin(_latest, _latest.c.recipient_id == _due.c.id)
    .order_by(_due.c.next_attempt_at)  # the longest due take the first rate slots
)

# Accounts under a rate: locked in one order, with their next free send slot and the last
# turn promised to a recipient waiting for one.
LOCK_RATED = (
    select(ProviderAccount.school_id, ProviderAccount.next_send_at, ProviderAccount.deferred_until)
    .where(ProviderAccount.school_id == any_(bindparam("ids", type_=ARRAY(Uuid))))
    .order_by(ProviderAccount.school_id)
    .with_for_update()
)

# Schools that changed since the worker last loaded them, with their provider accounts.
SCHOOLS = (
    select(School, ProviderAccount)
    .outerjoin(ProviderAccount, ProviderAccount.school_id == School.id)
    .where(School.id.in_(bindparam("ids", expanding=True)))
)

# Message ids that the attempts to the same numbers hold (the school's other recipients of
# those numbers included), since `since`: what a recovery must not take for its own.
_other = aliased(Recipient)
TAKEN = (
    select(Recipient.id.label("recipient_id"), Attempt.provider_message_id)
    .join(_other, (_other.school_id == Recipient.school_id) & (_other.phone == Recipient.phone))
    .join(Attempt, Attempt.recipient_id == _other.id)
    .where(
        Recipient.id.in_(bindparam("ids", expanding=True)),
        Attempt.provider_message_id.is_not(None),
        Attempt.created_at >= bindparam("since"),
    )
)

# -- the record ------------------------------------------------------------------------

# A numbers's waiting recipients, for a batch in which it opted out at the provider: the
# opt-out fails them (`opt_outs.opted_out_at_provider`), so the batch locks them with its
# own recipients, in one id order (`app.sending.locks`), never after them.
_opted = aliased(Recipient)


def waiting_of_opted_out(recipient: type[Recipient]) -> ColumnElement[bool]:
    """Whether `recipient` (the entity or an alias) waits, its number one of those of the
    recipients `opted_out` (the record's, and the receipt applier's `LOCK_APPLIED`)."""
    return and_(
        tuple_(recipient.school_id, recipient.phone).in_(
            select(_opted.school_id, _opted.phone).where(
                _opted.id == any_(bindparam("opted_out", type_=ARRAY(BigInteger)))
            )
        ),
        recipient.status.in_([s.value for s in rules.WAITING]),
    )


_WAITING_OF_OPTED_OUT = waiting_of_opted_out(Recipient)
_BATCH = Recipient.id == any_(bindparam("ids", type_=ARRAY(BigInteger)))


def record(opted_out: bool) -> Select[*tuple[Any, ...]]:
    """The record's recipients (`ids`), locked in id order, as `RECIPIENT_COLUMNS`; with
    `opted_out`, the waiting recipients of the numbers of those `opted_out` too."""
    return (
        select(*RECIPIENT_COLUMNS)
        .join(Campaign, Campaign.id == Recipient.campaign_id)
        .where(or_(_BATCH, _WAITING_OF_OPTED_OUT) if opted_out else _BATCH)
        .order_by(Recipient.id)
        .with_for_update(of=Recipient)
    )


def recorded_messages(keys: Sequence[tuple[str, str]]) -> Select[str, str | None]:
    """The (provider, message id) pairs among `keys` that an attempt holds already."""
    return select(Attempt.provider, Attempt.provider_message_id).where(
        tuple_(Attempt.provider, Attempt.provider_message_id).in_(list(keys))
    )


# -- writes: one statement each, over arrays (`unnest`) ---------------------------------


def unnest(columns: Mapping[str, str], prefix: str = "") -> str:
    """`unnest(...) AS v (...)` over one array parameter per column (`prefix` + name)."""
    params = ", ".join(f"CAST(:{prefix}{name} AS {kind}[])" for name, kind in columns.items())
    return f"unnest({params}) AS v ({', '.join(columns)})"


def arrays(columns: Iterable[str], rows: Sequence[Any], prefix: str = "") -> dict[str, list[Any]]:
    """The parameters of `unnest`: each column's values across `rows` (read by name)."""
    return {f"{prefix}{name}": [getattr(row, name) for row in rows] for name in columns}


# A `RecipientRow`'s columns that the worker may change, with their types: written back
# whole, one statement for a batch (`updated_at` is the statement's `now`).
WRITTEN = {
    "id": "bigint",
    "status": "text",
    "failed_reason": "text",
    "failed_definition": "int",
    "provider_error_code": "text",
    "attempts": "int",
    "next_attempt_at": "timestamptz",
    "first_attempt_at": "timestamptz",
    "claimed_at": "timestamptz",
    "claimed_by": "uuid",
}


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

# The claim's write: the recipients settled without a hand-over (rare, written whole), then
# the leased ones, all into one state, each with its own attempt count and times.
_LEASED = {
    "id": "bigint",
    "attempts": "int",
    "first_attempt_at": "timestamptz",
    "claimed_at": "timestamptz",
}
_WRITE_CLAIM = text(
    f"""
    WITH settled AS ({UPDATE_RECIPIENTS})
    UPDATE recipients AS r
    SET status = :leased_status, failed_reason = :leased_failed_reason,
        failed_definition = :leased_failed_definition,
        provider_error_code = :leased_provider_error_code, next_attempt_at = :lease_until,
        attempts = v.attempts, first_attempt_at = v.first_attempt_at,
        claimed_at = v.claimed_at, claimed_by = :claim, updated_at = :now
    FROM {unnest(_LEASED, "leased_")}
    WHERE r.id = v.id
    """
)


@dataclass(frozen=True, slots=True)
class SendSlots:
    """An account's next free send slot and last promised turn, as a claim leaves them."""

    school_id: uuid.UUID
    next_send_at: datetime
    deferred_until: datetime | None


_SLOTS = {"school_id": "uuid", "next_send_at": "timestamptz", "deferred_until": "timestamptz"}
_WRITE_SLOTS = text(
    f"""
    UPDATE provider_accounts AS a
    SET next_send_at = v.next_send_at, deferred_until = v.deferred_until
    FROM {unnest(_SLOTS)}
    WHERE a.school_id = v.school_id
    """
)


def write_claim(
    changed: Sequence[RecipientRow],
    leased: Sequence[RecipientRow],
    leasing: rules.State,
    lease_until: datetime,
    claim: uuid.UUID,
    now: datetime,
) -> tuple[TextClause, dict[str, Any]]:
    """The claim's write and its parameters: `changed` rows whole, `leased` ones into
    `leasing` with the lease."""
    return _WRITE_CLAIM, {
        **arrays(WRITTEN, changed),
        **arrays(_LEASED, leased, "leased_"),
        "leased_status": leasing.status.value,
        "leased_failed_reason": leasing.failed_reason,
        "leased_failed_definition": leasing.definition,
        "leased_provider_error_code": leasing.provider_error_code,
        "lease_until": lease_until,
        "claim": claim,
        "now": now,
    }


def write_slots(slots: Sequence[SendSlots]) -> tuple[TextClause, dict[str, Any]]:
    return _WRITE_SLOTS, arrays(_SLOTS, slots)


@dataclass(frozen=True, slots=True)
class NewAttempt:
    """An attempt row the record inserts."""

    recipient_id: int
    provider: str
    provider_message_id: str | None
    status: str
    error_code: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RecoveredAttempt:
    """What the record learnt of an attempt whose outcome was unknown (its id known)."""

    id: int
    provider_message_id: str | None
    status: str
    failed: bool
    error_code: str | None


_NEW = {
    "recipient_id": "bigint",
    "provider": "text",
    "provider_message_id": "text",
    "status": "text",
    "error_code": "text",
    "created_at": "timestamptz",
}
_RECOVERED = {
    "id": "bigint",
    "provider_message_id": "text",
    "status": "text",
    "failed": "boolean",
    "error_code": "text",
}
# The record's writes, one statement: the attempts recovered (an accepted one keeps the
# error code it had), the new attempts (a message id already recorded, by a worker that
# took the hand-over over, is not recorded twice), then the recipients.
_WRITE_RECORD = text(
    f"""
    WITH recovered AS (
        UPDATE attempts AS a
        SET provider_message_id = coalesce(v.provider_message_id, a.provider_message_id),
            status = v.status,
            error_code = CASE WHEN v.failed THEN v.error_code ELSE a.error_code END,
            updated_at = :now
        FROM {unnest(_RECOVERED, "recovered_")}
        WHERE a.id = v.id
    ),
    created AS (
        INSERT INTO attempts ({", ".join(_NEW)}, updated_at)
        SELECT {", ".join(f"v.{name}" for name in _NEW)}, :now
        FROM {unnest(_NEW, "new_")}
        ON CONFLICT (provider, provider_message_id) DO NOTHING
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


# -- the admission (`app.delivery.admission`), straight on the driver -----------------

# One round's locks: those of the sends answered let go, then each candidate's tried.
# A session that holds a lock already gets it again whatever waits for it, so for a key
# this connection holds, a stop waiting for it (an ungranted advisory lock on the same key,
# which pg_locks shows as two 32-bit halves) refuses the candidate instead: the stop goes
# ahead once this connection's sends of that campaign are answered.
ADMISSION_LOCKS = """
    SELECT (SELECT count(pg_advisory_unlock_shared(key)) FROM unnest($1::bigint[]) AS key)
               AS released,
           array(
               SELECT CASE
                   WHEN key = ANY($3::bigint[]) AND EXISTS (
                       SELECT FROM pg_locks AS l
                       WHERE l.locktype = 'advisory' AND NOT l.granted
                         AND l.database = (SELECT oid FROM pg_database
                                           WHERE datname = current_database())
                         AND l.classid::bigint = (key >> 32) & 4294967295
                         AND l.objid::bigint = key & 4294967295 AND l.objsubid = 1)
                   THEN false
                   ELSE pg_try_advisory_lock_shared(key)
               END
               FROM unnest($2::bigint[]) WITH ORDINALITY AS t (key, n) ORDER BY n) AS locked
"""
# Still waiting for this claim's hand-over: the campaign active, the recipient not stopped
# (an opt-out fails it), and not taken over by another claim since (an expired lease).
STILL_WAITING = f"""
    SELECT r.id FROM unnest($1::bigint[], $2::uuid[]) AS j (id, claim)
    JOIN recipients AS r ON r.id = j.id AND r.claimed_by = j.claim
    JOIN campaigns AS c ON c.id = r.campaign_id
    WHERE c.status = 'active'
      AND r.status IN ({", ".join(f"'{s.value}'" for s in sorted(rules.WAITING))})
"""

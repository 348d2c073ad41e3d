"""The worker's reads (`app.delivery.sql`): the claim's, the record's and the admission's,
each with the locks it takes (`app.sending.locks`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Select,
    Uuid,
    any_,
    bindparam,
    func,
    select,
    tuple_,
)
from sqlalchemy import Sequence as IdSequence
from sqlalchemy.dialects.postgresql import ARRAY, distinct_on
from sqlalchemy.orm import aliased

from app.delivery.sql.shapes import RECIPIENT_COLUMNS, Previous
from app.models import Attempt, Campaign, ProviderAccount, Recipient, School
from app.sending import status as rules

# -- the claim -------------------------------------------------------------------------

# Due recipients, locked, as `RECIPIENT_COLUMNS` followed by what the hand-over needs (the
# campaign's body, the merge fields), the recipient's latest attempt (`Previous`), and the
# versions of its school and provider account (`app.delivery.school_cache`).
# The latest attempts are found by recipient id among the due ones (DISTINCT ON), never
# with ORDER BY id DESC LIMIT 1 per recipient: with the attempts table's statistics
# behind its growth the planner may walk the primary key backwards for that, through
# every attempt for a recipient that has none.
# The batch size is written into the statement (`literal_execute`), not sent as a parameter:
# with its LIMIT known, PostgreSQL's plan for any `now` (its generic plan) is estimated
# cheaper than one made for each `now`, so a connection plans the claim five times, not at
# every claim (about 0.5 ms of a claim at 1,000,000 recipients, `bench/claim.py`).
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
    .limit(bindparam("limit", type_=Integer, literal_execute=True))
    .with_for_update(of=Recipient, skip_locked=True)
    .cte("due")
)
_latest = (
    select(
        Attempt.recipient_id,
        *(getattr(Attempt, f.name).label(f"previous_{f.name}") for f in fields(Previous)),
    )
    # A first hand-over (no attempt counted yet) has no attempt to look for.
    .where(Attempt.recipient_id.in_(select(_due.c.id).where(_due.c.attempts > 0)))
    .order_by(Attempt.recipient_id, Attempt.id.desc())
    .ext(distinct_on(Attempt.recipient_id))
    .subquery("latest")
)
# Each due row also takes an attempt id (`new_attempt_id`) from the attempts' own sequence:
# a new hand-over's attempt is named in its status callback URL (`app.providers.callbacks`)
# before its row is written (ids a claim does not use are gaps, as a rolled-back insert
# leaves).
_ATTEMPT_IDS = IdSequence("attempts_id_seq")
CLAIM = (
    select(
        *_due.c,
        *(column for column in _latest.c if column.name != "recipient_id"),
        _ATTEMPT_IDS.next_value().label("new_attempt_id"),
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

# A batch's recipients (`ids`) with, for a batch in which some (`opted_out`) opted out at
# the provider, the waiting recipients of their numbers: the opt-out fails those
# (`opt_outs.opted_out_at_provider`), so the batch locks them with its own, in one id order
# (`app.sending.locks`), never after them. The record's and the receipt applier's
# (`receipts.LOCK_APPLIED`). Found as one array of ids (the waiting ones looked up first,
# by number), which the primary key's index scans for: an OR of the two conditions is
# checked against every recipient in the table.
_opted = aliased(Recipient)
_waiting = aliased(Recipient)
_WAITING_IDS = (
    select(_waiting.id)
    .where(
        tuple_(_waiting.school_id, _waiting.phone).in_(
            select(_opted.school_id, _opted.phone).where(
                _opted.id == any_(bindparam("opted_out", type_=ARRAY(BigInteger)))
            )
        ),
        _waiting.status.in_([s.value for s in rules.WAITING]),
    )
    .scalar_subquery()
)
_IDS = bindparam("ids", type_=ARRAY(BigInteger))
BATCH = Recipient.id == any_(_IDS)
BATCH_AND_WAITING = Recipient.id == any_(func.array_cat(_IDS, func.array(_WAITING_IDS)))


def record(opted_out: bool) -> Select[*tuple[Any, ...]]:
    """The record's recipients (`ids`), locked in id order, as `RECIPIENT_COLUMNS`; with
    `opted_out`, the waiting recipients of the numbers of those `opted_out` too."""
    return (
        select(*RECIPIENT_COLUMNS)
        .join(Campaign, Campaign.id == Recipient.campaign_id)
        .where(BATCH_AND_WAITING if opted_out else BATCH)
        .order_by(Recipient.id)
        .with_for_update(of=Recipient)
    )


def recorded_messages(keys: Sequence[tuple[str, str]]) -> Select[str, str | None]:
    """The (provider, message id) pairs among `keys` that an attempt holds already."""
    return select(Attempt.provider, Attempt.provider_message_id).where(
        tuple_(Attempt.provider, Attempt.provider_message_id).in_(list(keys))
    )


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

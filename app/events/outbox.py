"""The outbox's order (`app.models.Event`): positions given to events once they have
committed, so a reader never passes an event still to commit.

Events are numbered as they are written (`id`), not as they commit: a transaction that
wrote event 100 may commit after the one that wrote event 101, and a reader that had passed
101 would never see 100. So readers follow `position` instead. `sequence` gives the events
that have committed since it last ran their positions, after every position given before,
in one short transaction, and hands each to the webhook endpoints that take it (a
delivery each); one sequencer at a time (a transaction-scoped advisory lock), so
positions are given in the order their transactions commit. An event still to commit is
not seen, gets no position, and gets a later one once it has committed: late, never lost.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Event

# Events given positions per transaction.
BATCH = 5000
# Notified (at commit) when positions were given: wakes the streams (`app.events.stream`).
SEQUENCED = "campanile_events_sequenced"
# The sequencer's lock (pg_advisory_xact_lock's key): one sequencer at a time.
_SEQUENCER = 0x63616D7065767473  # "campevts"
# The next positions, after the last given, to the committed events without one, in the
# order they were written; and a delivery of each to every enabled webhook endpoint of its
# school that takes its type (`app.events.deliveries`). How many were given positions.
_SEQUENCE = text(
    """
    WITH todo AS (
        SELECT id FROM events WHERE position IS NULL ORDER BY id LIMIT :limit FOR UPDATE
    ),
    numbered AS (
        SELECT id,
               (SELECT coalesce(max(position), 0) FROM events)
               + row_number() OVER (ORDER BY id) AS position
        FROM todo
    ),
    sequenced AS (
        UPDATE events AS e SET position = n.position FROM numbered AS n WHERE e.id = n.id
        RETURNING e.id, e.school_id, e.type
    ),
    fanned AS (
        INSERT INTO webhook_deliveries (endpoint_id, event_id, next_attempt_at)
        SELECT w.id, s.id, now()
        FROM sequenced AS s
        JOIN webhook_endpoints AS w
          ON w.school_id = s.school_id AND w.enabled
         AND (w.events IS NULL OR s.type = ANY (w.events))
    )
    SELECT count(*) FROM sequenced
    """
)


async def sequence(session: AsyncSession, limit: int = BATCH) -> int:
    """Give positions to up to `limit` committed events without one, in the caller's
    transaction (the caller commits at once: the lock is held until then); how many. 0
    when another sequencer is at work."""
    lock = text("SELECT pg_try_advisory_xact_lock(:key)")
    if not await session.scalar(lock, {"key": _SEQUENCER}):
        return 0
    given = int(await session.scalar(_SEQUENCE, {"limit": limit}) or 0)
    if given:
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": SEQUENCED})
    return given


async def read(
    session: AsyncSession,
    after: int,
    *,
    campaign_id: uuid.UUID | None = None,
    limit: int = 500,
) -> list[Event]:
    """The events after position `after`, in order (one campaign's, with `campaign_id`)."""
    query = select(Event).where(Event.position > after).order_by(Event.position).limit(limit)
    if campaign_id is not None:
        query = query.where(Event.campaign_id == campaign_id)
    return list((await session.scalars(query)).all())


async def latest(session: AsyncSession, campaign_id: uuid.UUID) -> int | None:
    """The position of the campaign's latest sequenced event (events committed since but not
    yet sequenced will be given later ones)."""
    query = select(func.max(Event.position)).where(Event.campaign_id == campaign_id)
    position = await session.scalar(query)
    return None if position is None else int(position)


# Events kept past the retention, a batch at a time (their deliveries go with them).
_PRUNE = text(
    """
    DELETE FROM events WHERE id IN (
        SELECT id FROM events WHERE occurred_at < :before ORDER BY occurred_at LIMIT :limit
    )
    """
)


async def prune(session: AsyncSession, before: datetime, limit: int = BATCH) -> int:
    """Delete up to `limit` events that occurred before `before`; how many."""
    result = await session.execute(_PRUNE, {"before": before, "limit": limit})
    return int(result.rowcount)  # type: ignore[attr-defined]

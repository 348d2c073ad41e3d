"""The outbox's order (`app.models.Event`): (xid, id), read only as far as every
transaction that could still add to it has ended.

Events are numbered as they are written (`id`), not as they commit: a transaction that
wrote event 100 may commit after the one that wrote event 101, and a reader that had passed
101 would never see 100. So each event keeps its transaction's id (`xid`), and a reader
reads only the events of transactions older than the oldest one still running (the xmin of
its snapshot, `HORIZON`): those have all ended, so nothing can later appear before what it
has read. Within one transaction, events follow their ids. An event still to commit is not
read, nor is anything after it: late, never lost. The price: a transaction that stays open
(anywhere on the server) holds back every event written after it began until it ends.

A position in this order is a `Position`; the stream sends it as each event's SSE `id`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Uuid,
    any_,
    bindparam,
    literal,
    literal_column,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Event

BATCH = 5000
# Notified at the commit of every transaction that wrote events (by the triggers,
# migration a7d2e9c4b318): wakes the streams (`app.events.stream`).
WRITTEN = "campanile_events"
# The oldest transaction still running: every event of an older one has committed or never
# will.
HORIZON = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
# The id of the transaction that runs this (given it now if it has none yet).
XID = "pg_current_xact_id()::text::bigint"


@dataclass(frozen=True, order=True, slots=True)
class Position:
    """A place in the outbox's order: after the event `id` of transaction `xid`."""

    xid: int
    id: int

    def __str__(self) -> str:
        return f"{self.xid}-{self.id}"

    @classmethod
    def parse(cls, text_: str) -> Position | None:
        """The position `str` gave, or None when `text_` is not one."""
        xid, dash, id_ = text_.partition("-")
        if not (dash and xid.isascii() and xid.isdigit() and id_.isascii() and id_.isdigit()):
            return None
        if len(xid) > 19 or len(id_) > 19 or max(int(xid), int(id_)) >= 2**63:
            return None
        return cls(int(xid), int(id_))

    def clause(self) -> ColumnElement[Any]:
        """This position as SQL, to compare with `tuple_(Event.xid, Event.id)`."""
        return tuple_(literal(self.xid, BigInteger), literal(self.id, BigInteger))

    @classmethod
    def of(cls, event: Event) -> Position:
        return cls(event.xid, event.id)


START = Position(0, 0)


# The readable events: of transactions that have ended (their order can no longer change).
READABLE = Event.xid < literal_column(HORIZON)


async def read(
    session: AsyncSession,
    after: Position,
    *,
    campaign_ids: list[uuid.UUID],
    limit: int = 500,
    below: int | None = None,
) -> list[Event]:
    """The readable events of these campaigns after `after`, in order; only those of
    transactions older than `below` (a horizon read before), if given."""
    query = (
        select(Event)
        .where(
            Event.campaign_id == any_(bindparam("campaigns", campaign_ids, ARRAY(Uuid))),
            tuple_(Event.xid, Event.id) > after.clause(),
            READABLE if below is None else Event.xid < literal(below, BigInteger),
        )
        .order_by(Event.xid, Event.id)
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


async def horizon(session: AsyncSession) -> int:
    """The oldest transaction running now: the events of every older one are readable."""
    return int(await session.scalar(select(literal_column(HORIZON))) or 0)


async def latest(session: AsyncSession, campaign_id: uuid.UUID) -> Position | None:
    """The position of the campaign's latest readable event (events of transactions still
    running, or of those after them, come later)."""
    query = (
        select(Event.xid, Event.id)
        .where(Event.campaign_id == campaign_id, READABLE)
        .order_by(Event.xid.desc(), Event.id.desc())
        .limit(1)
    )
    row = (await session.execute(query)).first()
    return None if row is None else Position(row.xid, row.id)


# Events kept past the retention, a batch at a time (their deliveries go with them): the
# oldest by id (ids grow with time), so the look costs the batch, never the table.
_PRUNE = text(
    """
    WITH pruned AS (
        DELETE FROM events WHERE id IN (
            SELECT id FROM (SELECT id, occurred_at FROM events ORDER BY id LIMIT :limit) AS o
            WHERE occurred_at < :before
        )
        RETURNING id
    ),
    deliveries AS (
        DELETE FROM webhook_deliveries WHERE event_id IN (SELECT id FROM pruned)
    )
    SELECT count(*) FROM pruned
    """
)


async def prune(session: AsyncSession, before: datetime, limit: int = BATCH) -> int:
    """Delete up to `limit` events that occurred before `before`, oldest first; how many."""
    return int(await session.scalar(_PRUNE, {"before": before, "limit": limit}) or 0)

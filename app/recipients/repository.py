"""Every query about a campaign's recipients and their attempts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import BigInteger, Select, Uuid, any_, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Attempt, Recipient
from app.sending import status as rules
from app.sending.state import bulk_values
from app.sending.status import Status


def _like(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def filtered(
    campaign_id: uuid.UUID,
    statuses: Sequence[Status] | None,
    failed_reason: str | None,
    q: str | None,
) -> Select[Recipient]:
    # `= ANY(array of one id)`, not `=`: see page().
    campaign = bindparam("campaign_ids", [campaign_id], type_=ARRAY(Uuid))
    query = select(Recipient).where(Recipient.campaign_id == any_(campaign))
    if statuses is not None:
        query = query.where(Recipient.status.in_([s.value for s in statuses]))
    if failed_reason is not None:
        query = query.where(Recipient.failed_reason == failed_reason)
    if q:
        pattern = _like(q.strip())
        full_name = func.concat_ws(" ", Recipient.first_name, Recipient.last_name)
        query = query.where(
            or_(
                Recipient.phone.ilike(pattern),
                full_name.ilike(pattern),
            )
        )
    return query


async def page(
    session: AsyncSession, query: Select[Recipient], after_id: int | None, limit: int
) -> list[Recipient]:
    """Keyset page of a `filtered` query, in id order.

    The order is written (campaign_id, id) and filtered() matches the campaign with
    `= ANY(array of one id)`, so that only the indexes that start with campaign_id can deliver it.
    With `campaign_id = id` PostgreSQL drops campaign_id from the sort key as constant, and
    `ORDER BY id LIMIT 51` can walk the primary key, filtering: the planner assumes the
    campaign's rows are spread evenly over the ids, but a campaign's recipients are one
    block of ids (launch is one INSERT), so that walk reads every older campaign's rows
    first (70 ms a page at p50, 120 ms at p99, behind 400,000 of them; see
    bench/campaign_pages.py). `= ANY` is not an equality to the planner, so the sort key
    keeps campaign_id.
    """
    if after_id is not None:
        query = query.where(Recipient.id > after_id)
    query = query.order_by(Recipient.campaign_id, Recipient.id).limit(limit + 1)
    return list((await session.execute(query)).scalars())


async def all_of(session: AsyncSession, campaign_id: uuid.UUID) -> list[Recipient]:
    query = select(Recipient).where(Recipient.campaign_id == campaign_id).order_by(Recipient.id)
    return list((await session.execute(query)).scalars())


async def get(
    session: AsyncSession, campaign_id: uuid.UUID, recipient_id: int, *, lock: bool = False
) -> Recipient | None:
    query = select(Recipient).where(
        Recipient.id == recipient_id, Recipient.campaign_id == campaign_id
    )
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def attempts(session: AsyncSession, recipient_id: int) -> list[Attempt]:
    query = select(Attempt).where(Attempt.recipient_id == recipient_id).order_by(Attempt.id)
    return list((await session.execute(query)).scalars())


async def lock_failed(session: AsyncSession, campaign_id: uuid.UUID) -> list[tuple[int, str]]:
    """The campaign's failed recipients, locked in id order (`app.sending.locks`): each
    one's id and failed reason."""
    query = (
        select(Recipient.id, Recipient.failed_reason)
        .where(Recipient.campaign_id == campaign_id, Recipient.status == Status.failed.value)
        .order_by(Recipient.id)
        .with_for_update()
    )
    return [(id_, reason or "") for id_, reason in await session.execute(query)]


async def requeue_failed(session: AsyncSession, ids: Sequence[int], change: rules.Change) -> int:
    """Queue a fresh attempt now for these failed recipients (locked by the caller): the
    resend's `change` (`app.sending.status.on_resend`), written for them all at once."""
    result = await session.execute(
        update(Recipient)
        .where(Recipient.id == any_(bindparam("ids", ids, type_=ARRAY(BigInteger))))
        .values(
            **bulk_values(change, func.now()),
            first_attempt_at=None,  # the retry age starts again
            claimed_at=None,  # a new hand-over, even if an earlier one was never recorded
            claimed_by=None,
            updated_at=func.now(),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]

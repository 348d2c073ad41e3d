"""Every query about opt-outs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import ColumnElement, and_, delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Campaign, OptOut, Recipient
from app.sending.status import WAITING


async def add(
    session: AsyncSession,
    school_id: uuid.UUID,
    phone: str,
    source: str,
    keyword: str | None,
    campaign_id: uuid.UUID | None,
) -> tuple[OptOut, bool]:
    """Insert unless present (the first record is kept); (record, whether it is new)."""
    inserted = await session.execute(
        insert(OptOut)
        .values(
            school_id=school_id,
            phone=phone,
            source=source,
            keyword=keyword,
            campaign_id=campaign_id,
        )
        .on_conflict_do_nothing()
        .returning(OptOut.phone)
    )
    created = inserted.scalar_one_or_none() is not None
    record = await get(session, school_id, phone)
    assert record is not None
    return record, created


async def get(session: AsyncSession, school_id: uuid.UUID, phone: str) -> OptOut | None:
    query = select(OptOut).where(OptOut.school_id == school_id, OptOut.phone == phone)
    return (
        await session.execute(query.execution_options(populate_existing=True))
    ).scalar_one_or_none()


async def remove(session: AsyncSession, school_id: uuid.UUID, phone: str) -> bool:
    result = await session.execute(
        delete(OptOut).where(OptOut.school_id == school_id, OptOut.phone == phone)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def page(
    session: AsyncSession, school_id: uuid.UUID, after_phone: str | None, limit: int
) -> list[OptOut]:
    query = select(OptOut).where(OptOut.school_id == school_id)
    if after_phone is not None:
        query = query.where(OptOut.phone > after_phone)
    query = query.order_by(OptOut.phone).limit(limit + 1)
    return list((await session.execute(query)).scalars())


# (school id, E.164 number) pairs: the numbers an opt-out is about.
Numbers = Sequence[tuple[uuid.UUID, str]]


def _waiting(numbers: Numbers) -> ColumnElement[bool]:
    return and_(
        tuple_(Recipient.school_id, Recipient.phone).in_(list(numbers)),
        Recipient.status.in_([s.value for s in WAITING]),
    )


async def waiting_campaigns(session: AsyncSession, numbers: Numbers) -> set[uuid.UUID]:
    """The campaigns in which any of the numbers still waits for an attempt (nothing
    locked)."""
    query = select(Recipient.campaign_id).where(_waiting(numbers))
    return set((await session.execute(query)).scalars())


async def waiting_recipients(
    session: AsyncSession, numbers: Numbers
) -> list[tuple[Recipient, Campaign]]:
    """The numbers' recipients still waiting for an attempt, locked in id order (the lock
    order, `app.sending.locks`), with their campaign."""
    query = (
        select(Recipient, Campaign)
        .join(Campaign, Campaign.id == Recipient.campaign_id)
        .where(_waiting(numbers))
        .order_by(Recipient.id)
        .with_for_update(of=Recipient)
    )
    return [(r, c) for r, c in await session.execute(query)]


async def latest_campaign_id(
    session: AsyncSession, school_id: uuid.UUID, phone: str
) -> uuid.UUID | None:
    """The school's campaign that last included the number (what a STOP reply answers)."""
    query = (
        select(Recipient.campaign_id)
        .where(Recipient.school_id == school_id, Recipient.phone == phone)
        .order_by(Recipient.id.desc())
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()

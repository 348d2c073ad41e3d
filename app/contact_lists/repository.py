"""Every query about contact lists and their contacts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, func, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Campaign, Contact, ContactList

ListSummary = Row[tuple[uuid.UUID, str, datetime, int]]


def _summaries() -> Select[tuple[uuid.UUID, str, datetime, int]]:
    contact_count = (
        select(func.count())
        .where(Contact.contact_list_id == ContactList.id)
        .correlate(ContactList)
        .scalar_subquery()
    )
    return select(
        ContactList.id,
        ContactList.name,
        ContactList.created_at,
        contact_count.label("contact_count"),
    )


async def summary(
    session: AsyncSession, school_id: uuid.UUID, list_id: uuid.UUID
) -> ListSummary | None:
    query = _summaries().where(ContactList.school_id == school_id, ContactList.id == list_id)
    return (await session.execute(query)).one_or_none()


async def summaries(
    session: AsyncSession,
    school_id: uuid.UUID,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
) -> list[ListSummary]:
    """Newest first, up to `limit` lists created before the `(created_at, id)` key."""
    query = _summaries().where(ContactList.school_id == school_id)
    if before is not None:
        query = query.where(tuple_(ContactList.created_at, ContactList.id) < tuple_(*before))
    query = query.order_by(ContactList.created_at.desc(), ContactList.id.desc()).limit(limit)
    return list((await session.execute(query)).all())


async def get(
    session: AsyncSession, school_id: uuid.UUID, list_id: uuid.UUID
) -> ContactList | None:
    query = select(ContactList).where(ContactList.school_id == school_id, ContactList.id == list_id)
    return (await session.execute(query)).scalar_one_or_none()


async def lock(
    session: AsyncSession, school_id: uuid.UUID, list_id: uuid.UUID
) -> ContactList | None:
    """The list, locked until the transaction ends (imports and deletion queue behind it)."""
    query = (
        select(ContactList)
        .where(ContactList.school_id == school_id, ContactList.id == list_id)
        .with_for_update()
    )
    return (await session.execute(query)).scalar_one_or_none()


async def campaigns_using(
    session: AsyncSession, school_id: uuid.UUID, list_id: uuid.UUID
) -> list[Campaign]:
    """The school's campaigns built on the list, oldest first."""
    query = (
        select(Campaign)
        .where(Campaign.school_id == school_id, Campaign.contact_list_id == list_id)
        .order_by(Campaign.created_at, Campaign.id)
    )
    return list((await session.execute(query)).scalars())


async def delete(session: AsyncSession, contact_list: ContactList) -> None:
    """Delete the list; its contacts go with it (ON DELETE CASCADE)."""
    await session.delete(contact_list)
    await session.flush()


# One statement for the whole import. WITH ORDINALITY + ORDER BY keeps ids in file order;
# ON CONFLICT skips numbers already in the list, and RETURNING tells which rows went in.
INSERT_CONTACTS = text(
    """
    INSERT INTO contacts (contact_list_id, phone, country_code, first_name, last_name, fields)
    SELECT CAST(:list_id AS uuid), t.phone, t.country_code, t.first_name, t.last_name,
           CAST(t.fields AS jsonb)
    FROM unnest(
        CAST(:phones AS text[]),
        CAST(:country_codes AS integer[]),
        CAST(:first_names AS text[]),
        CAST(:last_names AS text[]),
        CAST(:fields AS text[])
    ) WITH ORDINALITY AS t(phone, country_code, first_name, last_name, fields, n)
    ORDER BY t.n
    ON CONFLICT (contact_list_id, phone) DO NOTHING
    RETURNING phone
    """
)


async def insert_contacts(
    session: AsyncSession,
    list_id: uuid.UUID,
    *,
    phones: list[str],
    country_codes: list[int],
    first_names: list[str | None],
    last_names: list[str | None],
    fields: list[str],
) -> set[str]:
    """Insert the contacts (`fields` as JSON text); the phones that were not already there."""
    params: dict[str, Any] = {
        "list_id": list_id,
        "phones": phones,
        "country_codes": country_codes,
        "first_names": first_names,
        "last_names": last_names,
        "fields": fields,
    }
    result = await session.execute(INSERT_CONTACTS, params)
    return set(result.scalars())


async def contacts(
    session: AsyncSession, list_id: uuid.UUID, limit: int, after: int | None
) -> list[Contact]:
    """In import order, up to `limit` contacts with an id above `after`."""
    query = select(Contact).where(Contact.contact_list_id == list_id)
    if after is not None:
        query = query.where(Contact.id > after)
    query = query.order_by(Contact.id).limit(limit)
    return list((await session.execute(query)).scalars())

"""Every query about schools, API keys and provider accounts."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiKey, ProviderAccount, School


async def get(session: AsyncSession, school_id: uuid.UUID) -> School | None:
    return await session.get(School, school_id)


class KeyInUse(NamedTuple):
    """A key that is not revoked, and the school it opens."""

    school: School
    key_id: uuid.UUID
    prefix: str


async def by_token_hash(session: AsyncSession, token_hash: str) -> KeyInUse | None:
    """The school of the key with this hash, unless the key was revoked: one query, the
    same one that loads the request's school (no cache, so a revocation holds at once)."""
    query = (
        select(School, ApiKey.id, ApiKey.prefix)
        .join(ApiKey, ApiKey.school_id == School.id)
        .where(ApiKey.token_hash == token_hash, ApiKey.revoked_at.is_(None))
    )
    row = (await session.execute(query)).one_or_none()
    return None if row is None else KeyInUse(*row)


async def by_key_id(
    session: AsyncSession, school_id: uuid.UUID, key_id: uuid.UUID
) -> KeyInUse | None:
    """As `by_token_hash`, for the key with this id (a stream token names its key)."""
    query = (
        select(School, ApiKey.id, ApiKey.prefix)
        .join(ApiKey, ApiKey.school_id == School.id)
        .where(ApiKey.id == key_id, School.id == school_id, ApiKey.revoked_at.is_(None))
    )
    row = (await session.execute(query)).one_or_none()
    return None if row is None else KeyInUse(*row)


async def revoked_among(session: AsyncSession, key_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Those of these keys that are revoked (or gone)."""
    live = await session.scalars(
        select(ApiKey.id).where(ApiKey.id.in_(key_ids), ApiKey.revoked_at.is_(None))
    )
    return set(key_ids) - set(live)


async def mark_keys_used(session: AsyncSession, minutes: dict[uuid.UUID, datetime]) -> None:
    """Each key's `last_used_at` = its minute, unless it is revoked or a later one is there."""
    await session.execute(
        text(
            """
            UPDATE api_keys AS k SET last_used_at = u.minute
            FROM unnest(CAST(:ids AS uuid[]), CAST(:minutes AS timestamptz[])) AS u(id, minute)
            WHERE k.id = u.id AND k.revoked_at IS NULL
              AND (k.last_used_at IS NULL OR k.last_used_at < u.minute)
            """
        ),
        {"ids": list(minutes), "minutes": list(minutes.values())},
    )


async def api_key(
    session: AsyncSession, school_id: uuid.UUID, key_id: uuid.UUID, *, lock: bool = False
) -> ApiKey | None:
    query = select(ApiKey).where(ApiKey.school_id == school_id, ApiKey.id == key_id)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def api_keys_page(
    session: AsyncSession,
    school_id: uuid.UUID,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[ApiKey]:
    """Up to limit+1 of the school's keys, oldest first, revoked ones too."""
    query = select(ApiKey).where(ApiKey.school_id == school_id)
    if after is not None:
        query = query.where(tuple_(ApiKey.created_at, ApiKey.id) > tuple_(*after))
    query = query.order_by(ApiKey.created_at, ApiKey.id).limit(limit + 1)
    return list((await session.execute(query)).scalars())


async def schools_page(
    session: AsyncSession, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[School]:
    """Up to limit+1 schools, oldest first."""
    query = select(School)
    if after is not None:
        query = query.where(tuple_(School.created_at, School.id) > tuple_(*after))
    query = query.order_by(School.created_at, School.id).limit(limit + 1)
    return list((await session.execute(query)).scalars())


async def provider_account(session: AsyncSession, school_id: uuid.UUID) -> ProviderAccount | None:
    return await session.get(ProviderAccount, school_id)


async def provider_accounts_by_sid(
    session: AsyncSession, provider: str, account_sid: str
) -> list[ProviderAccount]:
    query = select(ProviderAccount).where(
        ProviderAccount.provider == provider, ProviderAccount.account_sid == account_sid
    )
    return list((await session.execute(query)).scalars())


async def get_many(session: AsyncSession, school_ids: Collection[uuid.UUID]) -> list[School]:
    query = select(School).where(School.id.in_(list(school_ids))).order_by(School.id)
    return list((await session.execute(query)).scalars())


async def provider_accounts_with_public_key(
    session: AsyncSession, provider: str
) -> list[ProviderAccount]:
    """The provider's accounts that carry a webhook public key (Telnyx)."""
    query = (
        select(ProviderAccount)
        .where(ProviderAccount.provider == provider, ProviderAccount.public_key.is_not(None))
        .order_by(ProviderAccount.school_id)
    )
    return list((await session.execute(query)).scalars())

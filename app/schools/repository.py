"""Every query about schools, API keys and provider accounts."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiKey, ProviderAccount, School


async def get(session: AsyncSession, school_id: uuid.UUID) -> School | None:
    return await session.get(School, school_id)


async def by_token_hash(session: AsyncSession, token_hash: str) -> School | None:
    query = (
        select(School)
        .join(ApiKey, ApiKey.school_id == School.id)
        .where(ApiKey.token_hash == token_hash)
    )
    return (await session.execute(query)).scalar_one_or_none()


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

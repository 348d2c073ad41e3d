"""The worker's safety nets, run now and then (`app.workers.delivery`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.campaigns import service as campaigns
from app.models import Campaign, CampaignStatus


async def sweep(session: AsyncSession) -> int:
    """Complete the campaigns whose last recipients finished in concurrent transactions
    (each saw the other still in progress); how many completed."""
    query = select(Campaign.id).where(Campaign.status == CampaignStatus.active)
    active = (await session.execute(query)).scalars()
    return await campaigns.complete_finished(session, list(active))

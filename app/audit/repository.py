"""Every query about audit events."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuditEvent


async def page(
    session: AsyncSession,
    school_id: uuid.UUID,
    *,
    action: str | None,
    target_id: str | None,
    since: datetime | None,
    before_id: int | None,
    limit: int,
) -> list[AuditEvent]:
    """Up to limit+1 of the school's events, newest first (ids grow with time)."""
    query = select(AuditEvent).where(AuditEvent.school_id == school_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if target_id is not None:
        query = query.where(AuditEvent.target_id == target_id)
    if since is not None:
        query = query.where(AuditEvent.created_at >= since)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    query = query.order_by(AuditEvent.id.desc()).limit(limit + 1)
    return list((await session.execute(query)).scalars())


async def prune(session: AsyncSession, older_than: datetime, batch: int) -> int:
    """Delete up to `batch` of the oldest events made before `older_than`; how many."""
    oldest = (
        select(AuditEvent.id)
        .where(AuditEvent.created_at < older_than)
        .order_by(AuditEvent.created_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(delete(AuditEvent).where(AuditEvent.id.in_(oldest)))
    return int(result.rowcount)  # type: ignore[attr-defined]

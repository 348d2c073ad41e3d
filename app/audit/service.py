"""Recording changes in the audit trail, and reading it back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import repository
from app.kit.clock import utcnow
from app.kit.pagination import decode_cursor, int_key, page_of
from app.models import AuditAction, AuditEvent


@dataclass(frozen=True, slots=True)
class Trail:
    """Where one request records its changes: the request's own session, so each event
    commits or rolls back with the change it describes; the actor (a key's prefix, or
    "admin") and the request's id."""

    session: AsyncSession
    actor: str
    request_id: str

    def record(
        self,
        school_id: uuid.UUID,
        action: AuditAction,
        target_id: object,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Add the event to the request's transaction (written when it commits)."""
        self.session.add(
            AuditEvent(
                school_id=school_id,
                actor=self.actor,
                action=action.value,
                target_id=str(target_id),
                details=details,
                request_id=self.request_id,
            )
        )


# Columns every write moves, whatever it changed.
_BOOKKEEPING = frozenset({"updated_at"})


def columns(row: Any) -> dict[str, Any]:
    """A row's column values, to tell afterwards what a change changed (`changed`)."""
    return {
        column.key: getattr(row, column.key)
        for column in row.__table__.columns
        if column.key not in _BOOKKEEPING  # (refreshed by the database at a flush)
    }


def changed(before: dict[str, Any], row: Any) -> list[str]:
    """The columns of `row` whose values differ from `before` (`columns`): an edit that
    changed none is no change, and leaves no audit event (README, Audit trail)."""
    after = columns(row)
    return sorted(k for k, v in after.items() if v != before[k])


async def list_page(
    session: AsyncSession,
    school_id: uuid.UUID,
    *,
    action: AuditAction | None,
    target_id: str | None,
    since: datetime | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[AuditEvent], str | None]:
    after = decode_cursor(cursor, int_key)
    rows = await repository.page(
        session,
        school_id,
        action=action.value if action else None,
        target_id=target_id,
        since=since,
        before_id=after[0] if after else None,
        limit=limit,
    )
    return page_of(rows, limit, lambda event: (event.id,))


async def prune(session: AsyncSession, retention_days: int, batch: int = 1000) -> int:
    """Delete a batch of events older than the retention; how many went."""
    return await repository.prune(session, utcnow() - timedelta(days=retention_days), batch)

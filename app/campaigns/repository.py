"""Every query about campaigns (and the bulk recipient statements of their lifecycle)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from itertools import product
from typing import cast

from sqlalchemy import (
    Select,
    Table,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Campaign, CampaignStatus, Recipient
from app.sending.status import IN_PROGRESS, launch_state


async def get(
    session: AsyncSession, school_id: uuid.UUID, campaign_id: uuid.UUID, *, lock: bool = False
) -> Campaign | None:
    query = select(Campaign).where(Campaign.id == campaign_id, Campaign.school_id == school_id)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


def list_query(
    school_id: uuid.UUID,
    status: CampaignStatus | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Select[Campaign]:
    query = select(Campaign).where(Campaign.school_id == school_id)
    if status is not None:
        query = query.where(Campaign.status == status)
    else:  # archived campaigns leave the active list unless asked for
        query = query.where(Campaign.status != CampaignStatus.archived)
    if after is not None:
        created_at, last_id = after
        query = query.where(
            or_(
                Campaign.created_at < created_at,
                and_(Campaign.created_at == created_at, Campaign.id < last_id),
            )
        )
    return query.order_by(Campaign.created_at.desc(), Campaign.id.desc()).limit(limit + 1)


async def list_page(
    session: AsyncSession,
    school_id: uuid.UUID,
    status: CampaignStatus | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Campaign]:
    return list((await session.execute(list_query(school_id, status, after, limit))).scalars())


async def counts(
    session: AsyncSession, campaign_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, dict[str, int]]:
    """Recipients per status for each campaign (an index-only scan per campaign)."""
    ids = list(campaign_ids)
    if not ids:
        return {}
    query = (
        select(Recipient.campaign_id, Recipient.status, func.count())
        .where(Recipient.campaign_id.in_(ids))
        .group_by(Recipient.campaign_id, Recipient.status)
    )
    result: dict[uuid.UUID, dict[str, int]] = {i: {} for i in ids}
    for campaign_id, status, count in await session.execute(query):
        result[campaign_id][status] = count
    return result


def _launch_rules() -> str:
    """status.launch_state for every case, as a VALUES table the launch statement joins."""
    rows = []
    for opted_out, allowed in product((True, False), repeat=2):
        state = launch_state(opted_out=opted_out, country_allowed=allowed)
        reason = f"'{state.failed_reason}'" if state.failed_reason else "NULL::varchar"
        rows.append(f"({opted_out}, {allowed}, '{state.status.value}', {reason})")
    return "VALUES " + ", ".join(rows)


LAUNCH_SQL = text(
    f"""
    INSERT INTO recipients (campaign_id, school_id, phone, first_name, last_name, fields,
                            status, failed_reason, next_attempt_at)
    SELECT :campaign_id, :school_id, c.phone, c.first_name, c.last_name, c.fields,
           r.status, r.reason, CASE WHEN r.status = 'queued' THEN CAST(:due_at AS timestamptz) END
    FROM contacts c
    LEFT JOIN opt_outs o ON o.school_id = :school_id AND o.phone = c.phone
    JOIN ({_launch_rules()}) AS r (opted_out, allowed, status, reason)
      ON r.opted_out = (o.phone IS NOT NULL) AND r.allowed = (c.country_code = ANY(:allowed))
    WHERE c.contact_list_id = :list_id
    ORDER BY c.id
    """
)


async def snapshot_recipients(
    session: AsyncSession, campaign: Campaign, allowed_country_codes: list[int], due_at: datetime
) -> int:
    """Copy the list into recipients in one statement, states from status.launch_state."""
    result = await session.execute(
        LAUNCH_SQL,
        {
            "campaign_id": campaign.id,
            "school_id": campaign.school_id,
            "list_id": campaign.contact_list_id,
            "allowed": allowed_country_codes,
            "due_at": due_at,
        },
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def stop_attempts(session: AsyncSession, campaign_id: uuid.UUID) -> None:
    """No attempt is due any more for this campaign (close, archive). A hand-over already
    begun keeps its lease: its worker records it (or releases it, unsent), and if that
    worker dies, the lease's end lets another find out whether its message went out."""
    due = (
        select(Recipient.id)
        .where(
            Recipient.campaign_id == campaign_id,
            Recipient.next_attempt_at.is_not(None),
            Recipient.claimed_at.is_(None),
        )
        .order_by(Recipient.id)  # locked in id order (`app.sending.locks`)
        .with_for_update()
    )
    await session.execute(
        update(Recipient)
        .where(Recipient.id.in_(due.scalar_subquery()))
        .values(next_attempt_at=None)
    )
    # The send turns its sender promised to recipients waiting for its rate are void now:
    # the next campaign's need not wait behind them. Best effort: a claim of that account
    # holding its row right now keeps them (waiting for it would take an account's lock
    # after recipients', against the lock order: `app.sending.locks`).
    await session.execute(_FORGET_TURNS, {"campaign_id": campaign_id})


_FORGET_TURNS = text(
    """
    UPDATE provider_accounts SET deferred_until = NULL
    WHERE school_id = (
        SELECT a.school_id FROM provider_accounts AS a
        JOIN campaigns AS c ON c.school_id = a.school_id
        WHERE c.id = :campaign_id AND a.deferred_until IS NOT NULL
        FOR UPDATE OF a SKIP LOCKED
    )
    """
)


async def complete_if_done(session: AsyncSession, campaign_id: uuid.UUID) -> bool:
    """Mark an active campaign complete when no recipient is in progress."""
    in_progress = exists().where(
        Recipient.campaign_id == campaign_id,
        Recipient.status.in_([s.value for s in IN_PROGRESS]),
    )
    result = await session.execute(
        update(Campaign)
        .where(
            Campaign.id == campaign_id,
            Campaign.status == CampaignStatus.active,
            ~in_progress,
        )
        .values(status=CampaignStatus.complete, completed_at=func.now())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# A Core statement (on the campaigns table, not the entity): each delivery claim sends it,
# and the ORM's bulk UPDATE path costs more than the statement when nothing is due. The
# column's onupdate (updated_at) still applies.
_campaigns = cast(Table, Campaign.__table__)
_ACTIVATE_DUE = (
    update(_campaigns)
    .where(
        _campaigns.c.status == CampaignStatus.scheduled, _campaigns.c.send_at <= bindparam("now")
    )
    .values(status=CampaignStatus.active)
    .returning(_campaigns.c.id)
)


async def activate_due(session: AsyncSession, now: datetime) -> list[uuid.UUID]:
    """Scheduled campaigns whose send_at has come become active.

    Sent on the session's connection: Campaign entities the session holds are not
    refreshed (the delivery engine, its one caller, calls it in a session of its own)."""
    connection = await session.connection()
    result = await connection.execute(_ACTIVATE_DUE, {"now": now})
    return list(result.scalars())

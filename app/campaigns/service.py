"""Campaigns: drafts, lifecycle (launch, close, archive, clone) and the completion rule."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from app.campaigns import repository, schemas
from app.contact_lists import repository as contact_lists
from app.errors import Conflict, NotFound
from app.kit.clock import utcnow
from app.kit.pagination import decode_cursor, page_of, time_key, uuid_key
from app.kit.schemas import parse_uuid
from app.models import Campaign, CampaignStatus, School
from app.sending.locks import hold_back_sends

EDITABLE = (CampaignStatus.draft,)
CLOSABLE = (CampaignStatus.scheduled, CampaignStatus.active)


async def get(
    session: AsyncSession, school: School, campaign_id: str, *, lock: bool = False
) -> Campaign:
    """The school's campaign, or 404 (another school's ids included)."""
    campaign = await repository.get(
        session, school.id, parse_uuid(campaign_id, "campaign"), lock=lock
    )
    if campaign is None:
        raise NotFound(f"No campaign with id {campaign_id!r}.")
    return campaign


async def view(session: AsyncSession, campaign: Campaign) -> schemas.Campaign:
    counts = (await repository.counts(session, [campaign.id]))[campaign.id]
    return shown(campaign, counts)


def shown(campaign: Campaign, counts: dict[str, int]) -> schemas.Campaign:
    """The campaign as the API shows it, with its recipients' `counts` by status."""
    data = {
        name: getattr(campaign, name) for name in schemas.Campaign.model_fields if name != "counts"
    }
    return schemas.Campaign.model_validate(
        {**data, "counts": schemas.Counts(total=sum(counts.values()), **counts)}
    )


async def list_page(
    session: AsyncSession,
    school: School,
    status: CampaignStatus | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[schemas.Campaign], str | None]:
    after = decode_cursor(cursor, time_key, uuid_key)
    key = (after[0], after[1]) if after else None
    rows = await repository.list_page(session, school.id, status, key, limit)
    page, next_cursor = page_of(rows, limit, lambda c: (c.created_at.isoformat(), c.id))
    counts = await repository.counts(session, [c.id for c in page])
    return [shown(c, counts[c.id]) for c in page], next_cursor


async def _own_list(session: AsyncSession, school: School, list_id: str) -> uuid.UUID:
    contact_list = await contact_lists.get(session, school.id, parse_uuid(list_id, "contact list"))
    if contact_list is None:
        raise NotFound(f"No contact list with id {list_id!r}.")
    return contact_list.id


async def create(session: AsyncSession, school: School, data: schemas.CampaignCreate) -> Campaign:
    """A new draft."""
    campaign = Campaign(
        school_id=school.id,
        name=data.name,
        body=data.body,
        contact_list_id=await _own_list(session, school, data.contact_list_id),
        send_at=data.send_at,
        status=CampaignStatus.draft,
    )
    session.add(campaign)
    await session.flush()
    await session.refresh(campaign)
    return campaign


def _require(campaign: Campaign, allowed: tuple[CampaignStatus, ...], action: str) -> None:
    if campaign.status not in allowed:
        states = " or ".join(s.value for s in allowed)
        raise Conflict(
            f"Cannot {action} a campaign that is {campaign.status.value}; it must be {states}.",
            extra={"campaign_status": campaign.status.value},
        )


async def update(
    session: AsyncSession, school: School, campaign: Campaign, data: schemas.CampaignUpdate
) -> Campaign:
    """Edit a draft."""
    _require(campaign, EDITABLE, "edit")
    fields = data.model_fields_set
    if data.name is not None:
        campaign.name = data.name
    if data.body is not None:
        campaign.body = data.body
    if data.contact_list_id is not None:
        campaign.contact_list_id = await _own_list(session, school, data.contact_list_id)
    if "send_at" in fields:
        campaign.send_at = data.send_at
    await session.flush()
    await session.refresh(campaign)
    return campaign


async def delete(session: AsyncSession, campaign: Campaign) -> None:
    """Delete a draft."""
    _require(campaign, EDITABLE, "delete")
    await session.delete(campaign)
    await session.flush()


async def clone(session: AsyncSession, campaign: Campaign) -> Campaign:
    """A new draft with the same body and list; the name says it is a copy."""
    copy = Campaign(
        school_id=campaign.school_id,
        name=f"{campaign.name} (copy)"[:200],
        body=campaign.body,
        contact_list_id=campaign.contact_list_id,
        status=CampaignStatus.draft,
    )
    session.add(copy)
    await session.flush()
    await session.refresh(copy)
    return copy


async def launch(session: AsyncSession, school: School, campaign: Campaign) -> Campaign:
    """Snapshot the list into recipients and start sending now or at `send_at`.

    The recipients and their first due attempt are written in this one transaction.
    """
    _require(campaign, EDITABLE, "launch")
    now = utcnow()
    later = campaign.send_at is not None and campaign.send_at > now
    due_at = campaign.send_at if later and campaign.send_at else now
    created = await repository.snapshot_recipients(
        session, campaign, school.allowed_country_codes, due_at
    )
    if created == 0:
        raise Conflict("The contact list is empty; import contacts before launching.")
    campaign.status = CampaignStatus.scheduled if later else CampaignStatus.active
    campaign.launched_at = now
    await session.flush()
    if campaign.status is CampaignStatus.active:
        await repository.complete_if_done(session, campaign.id)
    await session.refresh(campaign)
    return campaign


async def _stopped(session: AsyncSession, school: School, campaign_id: str) -> Campaign:
    """The campaign to close or archive, locked, with no attempt due any more and its
    sends held back: no attempt starts once the call returns (the caller checks its state,
    and a refusal rolls all of it back). The locks come in the order every other writer
    takes them (`app.sending.locks`): the send lock, the recipients, the campaign's row."""
    campaign = await get(session, school, campaign_id)  # 404 first; no lock yet
    await hold_back_sends(session, [campaign.id])
    await repository.stop_attempts(session, campaign.id)
    await lock(session, campaign)
    return campaign


async def close(session: AsyncSession, school: School, campaign_id: str) -> Campaign:
    """Stop all further attempts; recipients keep their status (receipts still apply)."""
    campaign = await _stopped(session, school, campaign_id)
    _require(campaign, CLOSABLE, "close")
    campaign.status = CampaignStatus.closed
    campaign.closed_at = utcnow()
    await session.flush()
    await session.refresh(campaign)
    return campaign


async def archive(session: AsyncSession, school: School, campaign_id: str) -> Campaign:
    """Hide the campaign and freeze every recipient's status as it is."""
    campaign = await _stopped(session, school, campaign_id)
    if campaign.status is CampaignStatus.archived:
        raise Conflict("The campaign is already archived.", extra={"campaign_status": "archived"})
    campaign.status = CampaignStatus.archived
    campaign.archived_at = utcnow()
    await session.flush()
    await session.refresh(campaign)
    return campaign


async def complete_if_done(session: AsyncSession, campaign_id: uuid.UUID) -> bool:
    """The completion rule; every path that finalises recipients calls this."""
    return await repository.complete_if_done(session, campaign_id)


async def complete_finished(session: AsyncSession, campaign_ids: Iterable[uuid.UUID]) -> int:
    """The completion rule for several campaigns, their rows in id order (the lock order,
    `app.sending.locks`); how many completed."""
    completed = 0
    for campaign_id in sorted(set(campaign_ids)):
        completed += await repository.complete_if_done(session, campaign_id)
    return completed


async def lock(session: AsyncSession, campaign: Campaign) -> None:
    """Lock the campaign's row and read it again (its status may have changed meanwhile)."""
    await session.refresh(campaign, with_for_update=True)


async def reopen(session: AsyncSession, campaign: Campaign) -> None:
    """A resend on a complete campaign makes it active again."""
    if campaign.status is CampaignStatus.complete:
        campaign.status = CampaignStatus.active
        campaign.completed_at = None
        await session.flush()

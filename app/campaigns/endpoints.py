from __future__ import annotations

from fastapi import APIRouter, Query, Response, status

from app.campaigns import schemas, service
from app.campaigns.schemas import Preview
from app.kit.deps import SessionDep
from app.kit.pagination import Cursor, Limit, Page
from app.models import CampaignStatus
from app.schools.dependencies import CurrentSchool
from app.sending import message

router = APIRouter(prefix="/campaigns", tags=["campaigns"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=schemas.Campaign)
async def create_campaign(
    data: schemas.CampaignCreate, school: CurrentSchool, session: SessionDep
) -> schemas.Campaign:
    """Create a draft campaign."""
    return await service.view(session, await service.create(session, school, data))


@router.get("", response_model=Page[schemas.Campaign])
async def list_campaigns(
    school: CurrentSchool,
    session: SessionDep,
    status: CampaignStatus | None = Query(
        default=None, description="Only this status (archived ones are listed only when asked)."
    ),
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[schemas.Campaign]:
    """The school's campaigns, newest first, with their counts."""
    items, next_cursor = await service.list_page(session, school, status, cursor, limit)
    return Page(items=items, next_cursor=next_cursor)


@router.post("/preview", response_model=Preview)
async def preview(data: schemas.PreviewRequest, school: CurrentSchool) -> Preview:
    """Render a body for a contact: text, encoding, characters and segments."""
    text = message.render(data.body, data.contact.model_dump())
    return Preview.model_validate(message.measure(text), from_attributes=True)


@router.get("/{campaign_id}", response_model=schemas.Campaign)
async def get_campaign(
    campaign_id: str, school: CurrentSchool, session: SessionDep
) -> schemas.Campaign:
    """One campaign with its status and counts."""
    return await service.view(session, await service.get(session, school, campaign_id))


@router.patch("/{campaign_id}", response_model=schemas.Campaign)
async def update_campaign(
    campaign_id: str, data: schemas.CampaignUpdate, school: CurrentSchool, session: SessionDep
) -> schemas.Campaign:
    """Edit a draft (409 once launched)."""
    campaign = await service.get(session, school, campaign_id, lock=True)
    return await service.view(session, await service.update(session, school, campaign, data))


@router.delete("/{campaign_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_campaign(campaign_id: str, school: CurrentSchool, session: SessionDep) -> Response:
    """Delete a draft (409 once launched)."""
    await service.delete(session, await service.get(session, school, campaign_id, lock=True))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{campaign_id}/launch", response_model=schemas.Campaign)
async def launch_campaign(
    campaign_id: str, school: CurrentSchool, session: SessionDep
) -> schemas.Campaign:
    """Launch a draft: now, or at its `send_at` (status scheduled until then)."""
    campaign = await service.get(session, school, campaign_id, lock=True)
    return await service.view(session, await service.launch(session, school, campaign))


@router.post("/{campaign_id}/close", response_model=schemas.Campaign)
async def close_campaign(
    campaign_id: str, school: CurrentSchool, session: SessionDep
) -> schemas.Campaign:
    """Stop all further attempts; recipients keep their status."""
    return await service.view(session, await service.close(session, school, campaign_id))


@router.post("/{campaign_id}/archive", response_model=schemas.Campaign)
async def archive_campaign(
    campaign_id: str, school: CurrentSchool, session: SessionDep
) -> schemas.Campaign:
    """Archive: hide from the active list and freeze every recipient's status."""
    return await service.view(session, await service.archive(session, school, campaign_id))


@router.post(
    "/{campaign_id}/clone", status_code=status.HTTP_201_CREATED, response_model=schemas.Campaign
)
async def clone_campaign(
    campaign_id: str, school: CurrentSchool, session: SessionDep
) -> schemas.Campaign:
    """A new draft with the same body and list."""
    campaign = await service.get(session, school, campaign_id)
    return await service.view(session, await service.clone(session, campaign))

from __future__ import annotations

from fastapi import APIRouter, Query, Response, status
from starlette.convertors import StringConvertor, register_url_convertor

from app.audit import service as audit
from app.campaigns import schemas, service
from app.campaigns.schemas import Preview
from app.errors import Conflict, NotFound, responses
from app.kit.deps import SessionDep
from app.kit.pagination import CURSOR_ERROR, Cursor, Limit, Page
from app.models import AuditAction, CampaignStatus
from app.schools.dependencies import CurrentSchool, SchoolTrail
from app.sending import message

router = APIRouter(prefix="/campaigns", tags=["campaigns"])


class CampaignIdConvertor(StringConvertor):
    """A campaign id in a path (`{campaign_id:campaign_id}`): any segment but `preview`,
    a resource of its own (`POST /v1/campaigns/preview`), so that another method on it is
    a 405 naming POST, not the campaign `preview` not found."""

    regex = "(?!preview$)[^/]+"


register_url_convertor("campaign_id", CampaignIdConvertor())
CAMPAIGN = "/{campaign_id:campaign_id}"

NO_SUCH_CAMPAIGN = (NotFound, "No such campaign in this school.")
NO_SUCH_LIST = (NotFound, "No such contact list in this school (`contact_list_id`).")


def _wrong_state(allowed: str) -> tuple[type[Conflict], str]:
    return (Conflict, f"The campaign is not {allowed}; `campaign_status` says what it is.")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.Campaign,
    operation_id="createCampaign",
    summary="Create a draft campaign",
    responses=responses(NO_SUCH_LIST),
)
async def create_campaign(
    data: schemas.CampaignCreate, school: CurrentSchool, session: SessionDep, trail: SchoolTrail
) -> schemas.Campaign:
    """Create a draft campaign."""
    campaign = await service.create(session, school, data)
    trail.record(school.id, AuditAction.campaign_create, campaign.id)
    return await service.view(session, campaign)


@router.get(
    "",
    response_model=Page[schemas.Campaign],
    operation_id="listCampaigns",
    summary="List campaigns",
    responses=responses(CURSOR_ERROR),
)
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


@router.post(
    "/preview",
    response_model=Preview,
    operation_id="previewMessage",
    summary="Preview a message",
)
async def preview(data: schemas.PreviewRequest, school: CurrentSchool) -> Preview:
    """Render a body for a contact: text, encoding, characters and segments."""
    text = message.render(data.body, data.contact.model_dump())
    return Preview.model_validate(message.measure(text), from_attributes=True)


@router.get(
    CAMPAIGN,
    response_model=schemas.Campaign,
    operation_id="getCampaign",
    summary="Get a campaign",
    responses=responses(NO_SUCH_CAMPAIGN),
)
async def get_campaign(
    campaign_id: str, school: CurrentSchool, session: SessionDep
) -> schemas.Campaign:
    """One campaign with its status and counts."""
    return await service.view(session, await service.get(session, school, campaign_id))


@router.patch(
    CAMPAIGN,
    response_model=schemas.Campaign,
    operation_id="updateCampaign",
    summary="Edit a draft campaign",
    responses=responses(NO_SUCH_CAMPAIGN, NO_SUCH_LIST, _wrong_state("a draft")),
)
async def update_campaign(
    campaign_id: str,
    data: schemas.CampaignUpdate,
    school: CurrentSchool,
    session: SessionDep,
    trail: SchoolTrail,
) -> schemas.Campaign:
    """Edit a draft (409 once launched)."""
    campaign = await service.get(session, school, campaign_id, lock=True)
    before = audit.columns(campaign)
    updated = await service.update(session, school, campaign, data)
    if fields := audit.changed(before, updated):
        trail.record(school.id, AuditAction.campaign_update, campaign.id, {"fields": fields})
    return await service.view(session, updated)


@router.delete(
    CAMPAIGN,
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="deleteCampaign",
    summary="Delete a draft campaign",
    responses=responses(NO_SUCH_CAMPAIGN, _wrong_state("a draft")),
)
async def delete_campaign(
    campaign_id: str, school: CurrentSchool, session: SessionDep, trail: SchoolTrail
) -> Response:
    """Delete a draft (409 once launched)."""
    campaign = await service.get(session, school, campaign_id, lock=True)
    await service.delete(session, campaign)
    trail.record(school.id, AuditAction.campaign_delete, campaign.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{campaign_id}/launch",
    response_model=schemas.Campaign,
    operation_id="launchCampaign",
    summary="Launch a campaign",
    responses=responses(
        NO_SUCH_CAMPAIGN,
        _wrong_state("a draft"),
        (Conflict, "The contact list is empty."),
    ),
)
async def launch_campaign(
    campaign_id: str, school: CurrentSchool, session: SessionDep, trail: SchoolTrail
) -> schemas.Campaign:
    """Launch a draft: now, or at its `send_at` (status scheduled until then)."""
    campaign = await service.get(session, school, campaign_id, lock=True)
    launched = await service.launch(session, school, campaign)
    trail.record(school.id, AuditAction.campaign_launch, campaign.id)
    return await service.view(session, launched)


@router.post(
    "/{campaign_id}/close",
    response_model=schemas.Campaign,
    operation_id="closeCampaign",
    summary="Close a campaign",
    responses=responses(NO_SUCH_CAMPAIGN, _wrong_state("scheduled or active")),
)
async def close_campaign(
    campaign_id: str, school: CurrentSchool, session: SessionDep, trail: SchoolTrail
) -> schemas.Campaign:
    """Stop all further attempts; recipients keep their status."""
    closed = await service.close(session, school, campaign_id)
    trail.record(school.id, AuditAction.campaign_close, closed.id)
    return await service.view(session, closed)


@router.post(
    "/{campaign_id}/archive",
    response_model=schemas.Campaign,
    operation_id="archiveCampaign",
    summary="Archive a campaign",
    responses=responses(NO_SUCH_CAMPAIGN, (Conflict, "The campaign is already archived.")),
)
async def archive_campaign(
    campaign_id: str, school: CurrentSchool, session: SessionDep, trail: SchoolTrail
) -> schemas.Campaign:
    """Archive: hide from the active list and freeze every recipient's status."""
    archived = await service.archive(session, school, campaign_id)
    trail.record(school.id, AuditAction.campaign_archive, archived.id)
    return await service.view(session, archived)


@router.post(
    "/{campaign_id}/clone",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.Campaign,
    operation_id="cloneCampaign",
    summary="Clone a campaign as a new draft",
    responses=responses(NO_SUCH_CAMPAIGN),
)
async def clone_campaign(
    campaign_id: str, school: CurrentSchool, session: SessionDep, trail: SchoolTrail
) -> schemas.Campaign:
    """A new draft with the same body and list."""
    campaign = await service.get(session, school, campaign_id)
    clone = await service.clone(session, campaign)
    trail.record(school.id, AuditAction.campaign_clone, clone.id, {"source": str(campaign.id)})
    return await service.view(session, clone)

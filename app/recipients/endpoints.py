from __future__ import annotations

from fastapi import APIRouter, Query, Response, status

from app.campaigns import service as campaigns
from app.campaigns.schemas import Preview
from app.kit.deps import SessionDep
from app.kit.pagination import Cursor, Limit, Page
from app.kit.schemas import NoNul
from app.models import OptOutSource
from app.opt_outs import schemas as opt_out_schemas
from app.opt_outs import service as opt_outs
from app.recipients import schemas, service
from app.recipients.schemas import FailedReasonCode
from app.schools.dependencies import CurrentSchool
from app.sending import message
from app.sending.status import Group, Status

router = APIRouter(prefix="/campaigns/{campaign_id}", tags=["recipients"])


@router.get("/contacts", response_model=Page[schemas.Recipient])
async def list_recipients(
    campaign_id: str,
    school: CurrentSchool,
    session: SessionDep,
    status: Status | None = None,
    status_group: Group | None = None,
    failed_reason: FailedReasonCode | None = None,
    q: str | None = Query(
        default=None, max_length=100, pattern=NoNul, description="Part of a phone or name"
    ),
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[schemas.Recipient]:
    """The campaign's contacts with their delivery status and failed reason."""
    campaign = await campaigns.get(session, school, campaign_id)
    items, next_cursor = await service.list_page(
        session,
        campaign,
        status=status,
        status_group=status_group,
        failed_reason=failed_reason.value if failed_reason else None,
        q=q,
        cursor=cursor,
        limit=limit,
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get(
    "/contacts.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "CSV export"}},
)
async def export_recipients(
    campaign_id: str, school: CurrentSchool, session: SessionDep
) -> Response:
    """Export the campaign's contacts with status, label and failed reason as CSV."""
    campaign = await campaigns.get(session, school, campaign_id)
    return Response(
        await service.export_csv(session, campaign),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="campaign-{campaign.id}.csv"'},
    )


@router.get("/contacts/{recipient_id}", response_model=schemas.RecipientDetail)
async def get_recipient(
    campaign_id: str, recipient_id: str, school: CurrentSchool, session: SessionDep
) -> schemas.RecipientDetail:
    """One contact of the campaign, with its attempts."""
    campaign = await campaigns.get(session, school, campaign_id)
    return await service.detail(session, await service.get(session, campaign, recipient_id))


@router.get("/contacts/{recipient_id}/preview", response_model=Preview)
async def preview_recipient(
    campaign_id: str, recipient_id: str, school: CurrentSchool, session: SessionDep
) -> Preview:
    """The message as this contact gets it."""
    campaign = await campaigns.get(session, school, campaign_id)
    recipient = await service.get(session, campaign, recipient_id)
    measured = message.measure(service.render(campaign, recipient))
    return Preview.model_validate(measured, from_attributes=True)


@router.post(
    "/contacts/{recipient_id}/opt-out",
    status_code=status.HTTP_201_CREATED,
    response_model=opt_out_schemas.OptOut,
    responses={200: {"model": opt_out_schemas.OptOut, "description": "Already opted out"}},
)
async def opt_out_recipient(
    campaign_id: str,
    recipient_id: str,
    school: CurrentSchool,
    session: SessionDep,
    response: Response,
) -> opt_out_schemas.OptOut:
    """Opt this contact's number out of every campaign of the school."""
    campaign = await campaigns.get(session, school, campaign_id)
    recipient = await service.get(session, campaign, recipient_id)
    record, created = await opt_outs.opt_out(
        session, school.id, recipient.phone, source=OptOutSource.staff, campaign_id=campaign.id
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return opt_out_schemas.OptOut.model_validate(record)


@router.post(
    "/contacts/{recipient_id}/resend",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.Recipient,
)
async def resend_recipient(
    campaign_id: str, recipient_id: str, school: CurrentSchool, session: SessionDep
) -> schemas.Recipient:
    """Queue a new attempt for a failed contact (409 when its reason forbids it)."""
    return service.view(await service.resend(session, school, campaign_id, recipient_id))


@router.post(
    "/resend-failed",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.BulkResendReport,
)
async def resend_failed(
    campaign_id: str, school: CurrentSchool, session: SessionDep
) -> schemas.BulkResendReport:
    """Resend every failed contact whose reason allows it; report what was skipped."""
    return await service.resend_failed(session, school, campaign_id)

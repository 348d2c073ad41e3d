from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, Response, status

from app.campaigns import service as campaigns
from app.campaigns.schemas import Preview
from app.errors import Conflict, NotFound, responses
from app.kit import examples
from app.kit.deps import SessionDep
from app.kit.pagination import CURSOR_ERROR, Cursor, Limit, Page
from app.kit.schemas import NoNul
from app.models import AuditAction, OptOutSource
from app.opt_outs import schemas as opt_out_schemas
from app.opt_outs import service as opt_outs
from app.recipients import schemas, service
from app.recipients.schemas import FailedReasonCode
from app.schools.dependencies import CurrentSchool, SchoolTrail
from app.sending import message
from app.sending.status import Group, Status

router = APIRouter(prefix="/campaigns/{campaign_id}", tags=["recipients"])

NO_SUCH_CAMPAIGN = (NotFound, "No such campaign in this school.")
NO_SUCH_CONTACT = (NotFound, "No such campaign in this school, or no such contact in it.")


@router.get(
    "/contacts",
    response_model=Page[schemas.Recipient],
    operation_id="listCampaignContacts",
    summary="List a campaign's contacts and their status",
    responses=responses(NO_SUCH_CAMPAIGN, CURSOR_ERROR),
)
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
    operation_id="exportCampaignContacts",
    summary="Export a campaign's contacts as CSV",
    responses={
        200: {
            "content": {
                "text/csv": {"schema": {"type": "string"}, "example": examples.CONTACTS_CSV}
            },
            "description": "CSV export",
        },
        **responses(NO_SUCH_CAMPAIGN),
    },
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


@router.get(
    "/contacts/{recipient_id}",
    response_model=schemas.RecipientDetail,
    operation_id="getCampaignContact",
    summary="Get one contact of a campaign, with its attempts",
    responses=responses(NO_SUCH_CONTACT),
)
async def get_recipient(
    campaign_id: str, recipient_id: str, school: CurrentSchool, session: SessionDep
) -> schemas.RecipientDetail:
    """One contact of the campaign, with its attempts."""
    campaign = await campaigns.get(session, school, campaign_id)
    return await service.detail(session, await service.get(session, campaign, recipient_id))


@router.get(
    "/contacts/{recipient_id}/preview",
    response_model=Preview,
    operation_id="previewCampaignContact",
    summary="Preview the message a contact gets",
    responses=responses(NO_SUCH_CONTACT),
)
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
    operation_id="optOutCampaignContact",
    summary="Opt a contact's number out",
    responses={
        200: {"model": opt_out_schemas.OptOut, "description": "Already opted out"},
        **responses(NO_SUCH_CONTACT),
    },
)
async def opt_out_recipient(
    campaign_id: str,
    recipient_id: str,
    school: CurrentSchool,
    session: SessionDep,
    trail: SchoolTrail,
    response: Response,
) -> opt_out_schemas.OptOut:
    """Opt this contact's number out of every campaign of the school."""
    campaign = await campaigns.get(session, school, campaign_id)
    recipient = await service.get(session, campaign, recipient_id)
    record, created = await opt_outs.opt_out(
        session, school.id, recipient.phone, source=OptOutSource.staff, campaign_id=campaign.id
    )
    if created:
        details = {"campaign_id": str(campaign.id), "recipient_id": str(recipient.id)}
        trail.record(school.id, AuditAction.opt_out_create, record.phone, details)
    else:
        response.status_code = status.HTTP_200_OK
    return opt_out_schemas.OptOut.model_validate(record)


@router.post(
    "/contacts/{recipient_id}/resend",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.Recipient,
    operation_id="resendCampaignContact",
    summary="Resend to a failed contact",
    responses=responses(
        NO_SUCH_CONTACT,
        (
            Conflict,
            "The contact cannot be resent (not failed, a reason that forbids it, or a "
            "campaign that is not active); `failed_reason` names its reason.",
        ),
    ),
)
async def resend_recipient(
    campaign_id: str,
    recipient_id: str,
    school: CurrentSchool,
    session: SessionDep,
    trail: SchoolTrail,
) -> schemas.Recipient:
    """Queue a new attempt for a failed contact (409 when its reason forbids it)."""
    recipient = await service.resend(session, school, campaign_id, recipient_id)
    details = {"campaign_id": str(recipient.campaign_id)}
    trail.record(school.id, AuditAction.recipient_resend, recipient.id, details)
    return service.view(recipient)


@router.post(
    "/resend-failed",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.BulkResendReport,
    operation_id="resendFailed",
    summary="Resend to every failed contact that may be",
    responses=responses(
        NO_SUCH_CAMPAIGN, (Conflict, "The campaign's status does not allow resending.")
    ),
)
async def resend_failed(
    campaign_id: str, school: CurrentSchool, session: SessionDep, trail: SchoolTrail
) -> schemas.BulkResendReport:
    """Resend every failed contact whose reason allows it; report what was skipped."""
    report = await service.resend_failed(session, school, campaign_id)
    if report.queued:
        details = {"queued": report.queued}
        target = uuid.UUID(campaign_id)  # found, so a UUID: recorded in its canonical form
        trail.record(school.id, AuditAction.campaign_resend_failed, target, details)
    return report

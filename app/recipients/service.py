"""Recipients: the Contacts page (list, one, preview, export) and staff actions on them."""

from __future__ import annotations

import csv
import io
from collections import Counter

from sqlalchemy.ext.asyncio import AsyncSession

from app.campaigns import service as campaigns
from app.errors import Conflict, NotFound
from app.kit.clock import utcnow
from app.kit.pagination import decode_cursor, int_key, page_of
from app.kit.schemas import parse_int_id
from app.models import Attempt, Campaign, Recipient, School
from app.recipients import repository, schemas
from app.sending import message, reasons
from app.sending import status as rules
from app.sending.state import apply_change, state_of
from app.sending.status import Group, Status


def failed_reason_view(recipient: Recipient) -> schemas.FailedReason | None:
    if recipient.failed_reason is None:
        return None
    reason = reasons.get(recipient.failed_reason)
    return schemas.FailedReason(
        code=reason.code,
        label=reason.label,
        definition=reasons.definition(reason.code, recipient.failed_definition),
        resendable=reason.resendable,
        provider_error_code=recipient.provider_error_code,
    )


def view(recipient: Recipient) -> schemas.Recipient:
    status = Status(recipient.status)
    return schemas.Recipient(
        id=str(recipient.id),
        phone=recipient.phone,
        first_name=recipient.first_name,
        last_name=recipient.last_name,
        fields=recipient.fields,
        status=status,
        status_label=rules.LABELS[status],
        status_group=rules.GROUPS[status],
        failed_reason=failed_reason_view(recipient),
        delivery_confirmed=recipient.delivery_confirmed,
        attempts=recipient.attempts,
        next_attempt_at=recipient.next_attempt_at,
        updated_at=recipient.updated_at,
    )


def _statuses(status: Status | None, group: Group | None) -> list[Status] | None:
    if status is None and group is None:
        return None
    chosen = set(Status) if status is None else {status}
    if group is not None:
        chosen &= {s for s, g in rules.GROUPS.items() if g is group}
    return sorted(chosen)


async def list_page(
    session: AsyncSession,
    campaign: Campaign,
    *,
    status: Status | None,
    status_group: Group | None,
    failed_reason: str | None,
    q: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[schemas.Recipient], str | None]:
    """One page of the campaign's recipients, in a stable order, filtered."""
    after = decode_cursor(cursor, int_key)
    query = repository.filtered(campaign.id, _statuses(status, status_group), failed_reason, q)
    rows = await repository.page(session, query, after[0] if after else None, limit)
    page, next_cursor = page_of(rows, limit, lambda r: (r.id,))
    return [view(r) for r in page], next_cursor


async def get(
    session: AsyncSession, campaign: Campaign, recipient_id: str, *, lock: bool = False
) -> Recipient:
    recipient = await repository.get(
        session, campaign.id, parse_int_id(recipient_id, "recipient"), lock=lock
    )
    if recipient is None:
        raise NotFound(f"No recipient with id {recipient_id!r} in this campaign.")
    return recipient


def _attempt_view(attempt: Attempt) -> schemas.AttemptOut:
    return schemas.AttemptOut(
        provider=attempt.provider,
        provider_message_id=attempt.provider_message_id,
        status=attempt.status,
        error_code=attempt.error_code,
        created_at=attempt.created_at,
        updated_at=attempt.updated_at,
    )


async def detail(session: AsyncSession, recipient: Recipient) -> schemas.RecipientDetail:
    history = [_attempt_view(a) for a in await repository.attempts(session, recipient.id)]
    return schemas.RecipientDetail(**view(recipient).model_dump(), attempts_history=history)


def render(campaign: Campaign, recipient: Recipient) -> str:
    """The message text this recipient gets (rendered from its launch snapshot)."""
    return message.render(
        campaign.body,
        {
            "phone": recipient.phone,
            "first_name": recipient.first_name,
            "last_name": recipient.last_name,
            "fields": recipient.fields,
        },
    )


async def resend(
    session: AsyncSession, school: School, campaign_id: str, recipient_id: str
) -> Recipient:
    """Queue a new attempt for a failed recipient whose reason allows it (`app.sending.status`).
    Locks in the lock order (`app.sending.locks`): the recipient, then the campaign's row."""
    campaign = await campaigns.get(session, school, campaign_id)  # 404 first; no lock yet
    recipient = await get(session, campaign, recipient_id, lock=True)
    await campaigns.lock(session, campaign)
    refusal = rules.resend_refusal(state_of(recipient), campaign.status)
    if refusal is not None:
        raise Conflict(refusal, extra={"failed_reason": recipient.failed_reason})
    apply_change(recipient, rules.on_resend(state_of(recipient), campaign.status), utcnow())
    recipient.first_attempt_at = None  # the retry age starts again
    recipient.claimed_at = None  # a new hand-over, even if an earlier one was never recorded
    recipient.claimed_by = None
    await campaigns.reopen(session, campaign)
    await session.flush()
    return recipient


def resendable_reasons(campaign: Campaign) -> list[str]:
    return [
        code
        for code in reasons.CODES
        if rules.resend_refusal(rules.State(Status.failed, code), campaign.status) is None
    ]


async def resend_failed(
    session: AsyncSession, school: School, campaign_id: str
) -> schemas.BulkResendReport:
    """Resend every failed recipient whose reason allows it; count the ones skipped. Locks
    the failed recipients, then the campaign's row (`app.sending.locks`)."""
    campaign = await campaigns.get(session, school, campaign_id)  # 404 first; no lock yet
    failed = await repository.lock_failed(session, campaign.id)
    await campaigns.lock(session, campaign)
    resendable = rules.State(Status.failed, "unknown")
    refusal = rules.resend_refusal(resendable, campaign.status)
    if refusal is not None:
        raise Conflict(refusal)
    allowed = set(resendable_reasons(campaign))
    queued = await repository.requeue_failed(
        session,
        [i for i, r in failed if r in allowed],
        rules.on_resend(resendable, campaign.status),  # the same for every reason allowed
    )
    if queued:
        await campaigns.reopen(session, campaign)
    skipped = Counter(reason for _, reason in failed if reason not in allowed)
    return schemas.BulkResendReport(queued=queued, skipped=dict(skipped))


EXPORT_COLUMNS = (
    "phone",
    "first_name",
    "last_name",
    "status",
    "status_label",
    "failed_reason",
    "failed_reason_label",
    "failed_reason_definition",
    "provider_error_code",
    "attempts",
    "updated_at",
    "delivery_confirmed",  # last: the earlier columns keep their places
)
# `delivery_confirmed` in the export: true / false for a delivered recipient, empty otherwise.
_CONFIRMED = {True: "true", False: "false", None: ""}


def _cell(value: str | None) -> str:
    """Keep spreadsheet apps from running a name as a formula."""
    if value and value[0] in "=+-@\t\r":
        return "'" + value
    return value or ""


async def export_csv(session: AsyncSession, campaign: Campaign) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    for recipient in await repository.all_of(session, campaign.id):
        item = view(recipient)
        reason = item.failed_reason
        writer.writerow(
            (
                item.phone,
                _cell(item.first_name),
                _cell(item.last_name),
                item.status.value,
                item.status_label,
                reason.code if reason else "",
                reason.label if reason else "",
                reason.definition if reason else "",
                reason.provider_error_code or "" if reason else "",
                item.attempts,
                item.updated_at.isoformat(),
                _CONFIRMED[item.delivery_confirmed],
            )
        )
    return out.getvalue()


async def campaign_of(session: AsyncSession, school: School, campaign_id: str) -> Campaign:
    return await campaigns.get(session, school, campaign_id)

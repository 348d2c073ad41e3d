"""The claim, step 1 of a cycle, in one transaction: due recipients are locked with
FOR UPDATE SKIP LOCKED (so several workers never take the same one), checked against their
campaign, retry age, sending window and provider rate (`app.delivery.pacing`), then leased
(`next_attempt_at` = now + lease) and marked with when their hand-over began (`claimed_at`)
and with the claim's own id (`claimed_by`). Each leased recipient becomes a `Job`.

A recipient whose hand-over may have gone out already (`claimed_at` still set when its
lease ran out, or its last attempt's answer lost) is claimed for a recovery
(`app.delivery.recover`): asked about first, sent only if it did not go out.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.campaigns import service as campaigns
from app.config import Settings
from app.delivery import pacing, recover, sql
from app.delivery.jobs import UNRESOLVED, Claim, Job, Sender
from app.delivery.school_cache import SchoolCache
from app.delivery.sql import Claimed, Previous
from app.kit.clock import utcnow
from app.models import CampaignStatus
from app.providers import codes
from app.providers.base import OutboundMessage
from app.providers.http_answers import SOFT_SENDING_ERROR
from app.providers.registry import Registry
from app.sending import message, policy
from app.sending import status as rules
from app.sending.state import apply_change, state_of


async def claim(
    session: AsyncSession, settings: Settings, registry: Registry, schools: SchoolCache
) -> Claim | None:
    """Claim up to a batch of due recipients in the session's transaction (the caller
    commits); what the claim decided, or None when nothing was due."""
    now = utcnow()
    # Plain rows from the connection: the session's ORM result layer costs more than the
    # query for a few hundred rows. (Not straight from the driver: the transaction's BEGIN
    # goes out with SQLAlchemy's first statement, and a lock taken before it would be
    # released at once.)
    connection = await session.connection()
    result = await connection.execute(sql.CLAIM, {"now": now, "limit": settings.worker_batch_size})
    found = list(map(sql.Claimed.reader(result.keys()), result))
    if not found:
        return None
    versions = {c.recipient.school_id: (c.school_version, c.account_version) for c in found}
    by_school, accounts = await schools.get(session, versions)
    taken = Claim(now, now + timedelta(seconds=settings.worker_lease_seconds))
    taken.next_send = await pacing.lock_rated(connection, accounts)
    for school_id, school in by_school.items():
        account = accounts.get(school_id)
        provider = registry.for_account(account)
        taken.senders[school_id] = Sender(
            school,
            # Once per school and claim: the window does not move within it.
            policy.window_opening(school, now),
            policy.window_closes(school, now),
            account,
            provider,
            _callback(registry, provider.name),
        )
    for claimed in found:
        _claim_one(taken, claimed, settings)
    leasing = taken.leasing.state if taken.leasing else None
    slots = pacing.written(taken.slots)
    write = sql.write_claim(
        taken.changed, taken.leased, leasing, taken.lease_until, taken.id, slots, now
    )
    if write is not None:
        await connection.execute(*write)
    await recover.mark_taken(session, taken.jobs)
    # After the write: the completion rule reads the recipients' stored statuses.
    await campaigns.complete_finished(session, taken.expired)
    return taken


def _callback(registry: Registry, provider: str) -> Callable[[int], str] | None:
    """The provider's status callback URL naming an attempt, by its id (None: no callback)."""
    base = registry.callback_url(provider)
    return None if base is None else functools.partial(registry.names.url, base)


def _claim_one(claim: Claim, found: Claimed, settings: Settings) -> None:
    """Lease one due recipient for an attempt (a Job), or settle why not now."""
    row, previous = found.recipient, found.previous
    sender = claim.senders[row.school_id]
    school = sender.school
    now = claim.now
    state = state_of(row)
    if row.campaign_status is CampaignStatus.scheduled:
        return  # its send_at came: it starts within a second (`activate_due`), still due
    stopped = row.campaign_status is not CampaignStatus.active or state.status not in rules.WAITING
    if stopped and row.claimed_at is None:
        row.next_attempt_at = None  # nothing is due here (defensive)
        claim.changed.append(row)
        return
    if stopped:
        # Closed, archived or opted out during a hand-over whose worker then died: its
        # message may have gone out, and its receipts need its id.
        _add_job(claim, found, sender, recover_only=True)
        return
    if state.status is rules.Status.scheduled and not policy.retry_allowed(school, row, now):
        last = _last_reason(previous, row.provider_error_code)
        if previous is not None and previous.status in UNRESOLVED:
            # Its last answer was lost: that message may have gone out after all. Ask
            # first (still Scheduled meanwhile); it fails only if it did not.
            _add_job(claim, found, sender, recover_only=True, expire=last)
            return
        change = rules.on_retry_expired(state, last)
        if change is not None:
            apply_change(row, change)
            claim.changed.append(row)
            claim.expired.add(row.campaign_id)
        return
    if sender.opening > now:
        row.next_attempt_at = sender.opening
        claim.changed.append(row)
        return
    account = sender.account
    not_before = reserved = None
    if account is not None and account.max_messages_per_second:
        reserved = claim.slots.get(school.id)
        if reserved is None:
            stored = claim.next_send.get(school.id, (None, None))
            reserved = pacing.slots_for(account, stored, now, settings)
            claim.slots[school.id] = reserved
        not_before = reserved.take()
        if not_before is None:  # over this account's rate: due when its turn comes
            row.next_attempt_at = reserved.later()
            claim.changed.append(row)
            return
    change = rules.on_claim(state, row.campaign_status)
    assert change is not None
    row.first_attempt_at = row.first_attempt_at or now
    claim.lease(row, change)
    _add_job(claim, found, sender, not_before, reserved)


def _add_job(
    claim: Claim,
    found: Claimed,
    sender: Sender,
    not_before: datetime | None = None,
    slots: pacing.Slots | None = None,
    *,
    recover_only: bool = False,
    expire: str | None = None,
) -> None:
    """The hand-over of a claimed recipient (`found`: its claimed row): a new one, or the
    recovery of one begun before (its lease ran out, or its provider's answer was lost).
    `recover_only`: the row is leased here as it stands, for a job that only asks the
    provider whether its last hand-over went out (recorded if it did), and never sends."""
    row, previous = found.recipient, found.previous
    now = claim.now
    if recover_only:
        row.next_attempt_at = claim.lease_until
        row.claimed_by = claim.id
        claim.changed.append(row)
    provider = sender.provider
    render = claim.templates.get(row.campaign_id)
    if render is None:
        render = claim.templates[row.campaign_id] = message.template(found.body)
    contact = {
        "phone": row.phone,
        "first_name": found.first_name,
        "last_name": found.last_name,
        "fields": found.fields,
    }
    recorded = False
    if previous is not None and previous.status in UNRESOLVED:
        # The provider's answer to that attempt was lost: the same hand-over goes on in
        # the same attempt, asking first whether the message went out.
        row.claimed_at = previous.created_at
        row.claimed_attempt_id = previous.id
        attempt_provider, recovering, recorded = previous.provider, True, True
    elif row.claimed_at is not None:
        # A lease ran out during the hand-over (its worker died before the record): ask
        # whether the message went out since it began, in the attempt its callbacks name
        # (one taken now for a hand-over begun before attempts were named).
        row.claimed_attempt_id = row.claimed_attempt_id or found.new_attempt_id
        attempt_provider, recovering = provider.name, True
    else:
        row.attempts += 1
        row.claimed_at = now
        row.claimed_attempt_id = found.new_attempt_id
        attempt_provider, recovering = provider.name, False
    attempt_id = row.claimed_attempt_id
    assert attempt_id is not None
    callback = sender.callback(attempt_id) if sender.callback else None
    outbound = OutboundMessage(row.phone, render(contact), callback)
    claim.jobs.append(
        Job(
            row.id,
            row.campaign_id,
            attempt_id,
            attempt_provider,
            provider,
            outbound,
            row.claimed_at,
            claim.id,
            not_before,
            recovering=recovering,
            recorded=recorded,
            recover_only=recover_only,
            expire_reason=expire,
            slots=slots,
            window_closes=sender.closes,
        )
    )


def _last_reason(previous: Previous | None, code: str | None) -> str | None:
    """The final reason of the soft bounce that made a recipient scheduled.

    A soft bounce is either a soft row of the code table, or a failure the adapter made soft
    whatever its code (throttling, 5xx, timeouts, no answer at all), which it classified as
    `sending_error` (app.providers.http_answers.SOFT_SENDING_ERROR): the same reason here, so an
    expired retry fails as the send itself would have failed once retries were over.
    """
    if previous is None:
        return None
    if code is None:
        return SOFT_SENDING_ERROR.reason
    classification = codes.classify(previous.provider, code, "receipt")
    return classification.reason if classification.soft else SOFT_SENDING_ERROR.reason

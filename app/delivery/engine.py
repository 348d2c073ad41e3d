"""The delivery engine: claim due recipients, hand their messages to providers, record.

One cycle (`run_once`) is three steps, never holding a row lock across a provider call:
1. claim, in one transaction: due recipients are locked with FOR UPDATE SKIP LOCKED (so
   several workers never take the same one), checked against their campaign, retry age,
   sending window and provider rate, then leased (`next_attempt_at` = now + lease) with an
   attempt row in status `sending`;
2. send, outside any transaction, with bounded concurrency;
3. record, in one transaction: each attempt's outcome through the status rules, receipts
   that arrived before the message id, 21610 opt-outs, and the completion rule.

A worker killed between 1 and 3 leaves its attempts `sending` and its recipients leased;
when the lease runs out another worker claims them, asks the provider whether the message
went out (`find_sent`) and only sends when it did not.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import metrics
from app.campaigns import repository as campaigns_repository
from app.campaigns import service as campaigns
from app.config import Settings
from app.delivery import policy, receipts
from app.delivery import status as rules
from app.kit.clock import utcnow
from app.kit.db import unit_of_work
from app.models import (
    Attempt,
    Campaign,
    CampaignStatus,
    OptOutSource,
    ProviderAccount,
    Recipient,
    School,
)
from app.opt_outs import service as opt_outs
from app.providers import codes
from app.providers.base import Classification, OutboundMessage, Outcome, Provider, SendResult
from app.providers.registry import Registry
from app.recipients import service as recipients

log = logging.getLogger(__name__)

# Our own attempt statuses, before the provider has answered.
SENDING = "sending"  # claimed, being handed over
UNKNOWN = "unknown"  # handed over, but the answer was lost (timeout, 5xx)
UNRESOLVED = (SENDING, UNKNOWN)


@dataclass
class Job:
    """One claimed recipient's hand-over."""

    recipient_id: int
    attempt: Attempt
    provider: Provider
    message: OutboundMessage
    # Earliest moment the provider's rate allows this send.
    not_before: datetime | None = None
    # An earlier hand-over of this attempt may have gone out: ask before sending.
    recover_since: datetime | None = None

    @property
    def new_attempt(self) -> bool:
        return self.recover_since is None


@dataclass
class Handover:
    job: Job
    result: SendResult | None  # None: released unsent (shutdown)


@dataclass
class _Slots:
    """Send slots reserved for one provider account in this claim."""

    start: datetime
    interval: timedelta
    capacity: int
    used: int = 0

    @property
    def next_free(self) -> datetime:
        return self.start + self.interval * self.used

    def take(self) -> datetime | None:
        if self.used >= self.capacity:
            return None
        slot = self.start + self.interval * self.used
        self.used += 1
        return slot


@dataclass
class Engine:
    sessionmaker: async_sessionmaker[AsyncSession]
    settings: Settings
    registry: Registry
    rng: random.Random = field(default_factory=random.Random)

    async def run_once(self, stopping: asyncio.Event | None = None) -> int:
        """One claim-send-record cycle; the number of recipients claimed."""
        with metrics.claim_seconds.time():
            jobs = await self.claim()
        if not jobs:
            return 0
        outcomes = await self.send(jobs, stopping or asyncio.Event())
        await self.record(outcomes)
        return len(jobs)

    # -- 1. claim ----------------------------------------------------------------------

    async def claim(self) -> list[Job]:
        async with unit_of_work(self.sessionmaker) as session:
            now = utcnow()
            await campaigns_repository.activate_due(session, now)
            rows = (
                await session.execute(
                    select(Recipient, Campaign, School)
                    .join(Campaign, Campaign.id == Recipient.campaign_id)
                    .join(School, School.id == Recipient.school_id)
                    .where(Recipient.next_attempt_at <= now)
                    .order_by(Recipient.next_attempt_at)
                    .limit(self.settings.worker_batch_size)
                    .with_for_update(of=Recipient, skip_locked=True)
                )
            ).all()
            if not rows:
                return []
            accounts = await _accounts(session, {school.id for _, _, school in rows})
            latest = await _latest_attempts(session, [r.id for r, _, _ in rows])
            slots: dict[uuid.UUID, _Slots] = {}
            jobs: list[Job] = []
            for recipient, campaign, school in rows:
                job = await self._claim_one(
                    session, now, recipient, campaign, school, accounts, latest, slots
                )
                if job is not None:
                    jobs.append(job)
            for school_id, reserved in slots.items():
                accounts[school_id].next_send_at = reserved.next_free
            await session.flush()  # gives the new attempts their ids
            return jobs

    async def _claim_one(
        self,
        session: AsyncSession,
        now: datetime,
        recipient: Recipient,
        campaign: Campaign,
        school: School,
        accounts: dict[uuid.UUID, ProviderAccount],
        latest: dict[int, Attempt],
        slots: dict[uuid.UUID, _Slots],
    ) -> Job | None:
        state = recipients.state_of(recipient)
        if campaign.status is not CampaignStatus.active or state.status not in rules.WAITING:
            recipient.next_attempt_at = None  # nothing is due here (defensive)
            return None
        previous = latest.get(recipient.id)
        if state.status is rules.Status.scheduled and not policy.retry_allowed(
            school, recipient, now
        ):
            last = _last_reason(previous, recipient.provider_error_code)
            change = rules.on_retry_expired(state, last)
            if change is not None:
                recipients.apply(recipient, change)
                await campaigns.complete_if_done(session, campaign.id)
            return None
        opening = policy.window_opening(school, now)
        if opening > now:
            recipient.next_attempt_at = opening
            return None
        account = accounts.get(school.id)
        not_before = None
        if account is not None and account.max_messages_per_second:
            reserved = slots.get(school.id)
            if reserved is None:
                reserved = slots[school.id] = _slots_for(account, now, self.settings)
            not_before = reserved.take()
            if not_before is None:
                return None  # over this account's rate: stays due for the next claim
        change = rules.on_claim(state, campaign.status)
        assert change is not None
        recipients.apply(recipient, change)
        recipient.next_attempt_at = now + timedelta(seconds=self.settings.worker_lease_seconds)
        recipient.first_attempt_at = recipient.first_attempt_at or now
        provider = self.registry.for_account(account)
        message = OutboundMessage(
            to=recipient.phone,
            body=recipients.render(campaign, recipient),
            status_callback=self.registry.callback_url(provider.name),
        )
        if previous is not None and previous.status in UNRESOLVED:
            # Same hand-over as before: keep its attempt, and ask before sending again.
            previous.updated_at = now
            return Job(
                recipient.id,
                previous,
                provider,
                message,
                not_before,
                recover_since=previous.created_at,
            )
        recipient.attempts += 1
        attempt = Attempt(recipient_id=recipient.id, provider=provider.name, status=SENDING)
        session.add(attempt)
        return Job(recipient.id, attempt, provider, message, not_before)

    # -- 2. send -----------------------------------------------------------------------

    async def send(self, jobs: list[Job], stopping: asyncio.Event) -> list[Handover]:
        gate = asyncio.Semaphore(self.settings.worker_concurrency)

        async def one(job: Job) -> Handover:
            async with gate:
                if job.not_before is not None:
                    wait = (job.not_before - utcnow()).total_seconds()
                    if wait > 0:
                        await asyncio.sleep(wait)
                if stopping.is_set():
                    return Handover(job, None)
                if job.recover_since is not None:
                    sid = await job.provider.find_sent(
                        job.message.to, job.recover_since, job.message.body
                    )
                    if sid is not None:
                        log.info(
                            "attempt %s had gone out as %s: not sent again", job.attempt.id, sid
                        )
                        return Handover(job, SendResult(Outcome.accepted, sid, "queued"))
                return Handover(job, await job.provider.send(job.message))

        return list(await asyncio.gather(*(one(job) for job in jobs)))

    # -- 3. record ---------------------------------------------------------------------

    async def record(self, outcomes: list[Handover]) -> None:
        async with unit_of_work(self.sessionmaker) as session:
            now = utcnow()
            ids = [o.job.recipient_id for o in outcomes]
            rows = (
                await session.execute(
                    select(Recipient, Campaign.status, School)
                    .join(Campaign, Campaign.id == Recipient.campaign_id)
                    .join(School, School.id == Recipient.school_id)
                    .where(Recipient.id.in_(ids))
                    .order_by(Recipient.id)
                    .with_for_update(of=Recipient)
                )
            ).all()
            context = {r.id: (r, status, school) for r, status, school in rows}
            attempt_ids = [o.job.attempt.id for o in outcomes]
            query = select(Attempt).where(Attempt.id.in_(attempt_ids))
            attempts = {a.id: a for a in (await session.execute(query)).scalars()}
            latest = await _latest_attempts(session, ids)
            finished: set[uuid.UUID] = set()
            for outcome in outcomes:
                recipient, campaign_status, school = context[outcome.job.recipient_id]
                attempt = attempts[outcome.job.attempt.id]
                if outcome.result is None:
                    await _release(session, recipient, attempt, outcome.job, now)
                    continue
                if await self._record_one(
                    session, now, recipient, campaign_status, school, attempt, latest, outcome
                ):
                    finished.add(recipient.campaign_id)
            await session.flush()
            for campaign_id in finished:
                await campaigns.complete_if_done(session, campaign_id)

    async def _record_one(
        self,
        session: AsyncSession,
        now: datetime,
        recipient: Recipient,
        campaign_status: CampaignStatus,
        school: School,
        attempt: Attempt,
        latest: dict[int, Attempt],
        outcome: Handover,
    ) -> bool:
        """Record one send; True when the recipient became final."""
        result = outcome.result
        assert result is not None
        metrics.messages_sent.labels(attempt.provider, result.outcome.value).inc()
        attempt.updated_at = now
        if result.outcome is Outcome.accepted:
            assert result.provider_message_id is not None
            attempt.provider_message_id = result.provider_message_id
            attempt.status = result.provider_status or "queued"
        else:
            attempt.status = UNKNOWN if result.outcome_unknown else "failed"
            attempt.error_code = result.error_code
        is_latest = latest.get(recipient.id) is None or latest[recipient.id].id == attempt.id
        change = None
        if is_latest:
            change = rules.on_send_result(
                recipients.state_of(recipient),
                campaign_status,
                result.outcome,
                result.classification,
                result.error_code,
                retry_allowed=policy.retry_allowed(school, recipient, now),
            )
        if change is not None:
            due = None
            if change.retry:
                due = policy.retry_due(school, recipient, now, result.retry_after_seconds, self.rng)
            recipients.apply(recipient, change, due)
        elif recipient.next_attempt_at is not None and recipient.status not in (
            rules.Status.scheduled.value,
        ):
            recipient.next_attempt_at = None  # our lease: nothing more is due
        if result.outcome is Outcome.accepted:
            assert attempt.provider_message_id is not None
            await receipts.lock_message(session, attempt.provider, attempt.provider_message_id)
            await session.flush()
            await receipts.apply_waiting(session, attempt)
        elif _is_opt_out(result.classification):
            await opt_outs.opt_out(
                session,
                recipient.school_id,
                recipient.phone,
                source=OptOutSource.provider,
                campaign_id=recipient.campaign_id,
            )
        return recipient.status in (rules.Status.delivered.value, rules.Status.failed.value)


def _is_opt_out(classification: Classification | None) -> bool:
    return classification is not None and classification.reason == "opted_out"


def _last_reason(previous: Attempt | None, code: str | None) -> str | None:
    """The final reason of the soft bounce that made a recipient scheduled."""
    if previous is None or code is None:
        return None
    return codes.classify(previous.provider, code, "receipt").reason


async def _accounts(
    session: AsyncSession, school_ids: set[uuid.UUID]
) -> dict[uuid.UUID, ProviderAccount]:
    """The schools' provider accounts, locked: each holds the next free send slot under its
    rate, so claims in other worker processes for the same account queue behind this one."""
    query = (
        select(ProviderAccount)
        .where(ProviderAccount.school_id.in_(school_ids))
        .order_by(ProviderAccount.school_id)
        .with_for_update()
    )
    return {a.school_id: a for a in (await session.execute(query)).scalars()}


async def _latest_attempts(session: AsyncSession, recipient_ids: list[int]) -> dict[int, Attempt]:
    query = (
        select(Attempt)
        .where(Attempt.recipient_id.in_(recipient_ids))
        .order_by(Attempt.recipient_id, Attempt.id.desc())
        .distinct(Attempt.recipient_id)
    )
    return {a.recipient_id: a for a in (await session.execute(query)).scalars()}


def _slots_for(account: ProviderAccount, now: datetime, settings: Settings) -> _Slots:
    """The account's next send slots that fall within the coming poll interval."""
    rate = float(account.max_messages_per_second or 0)
    interval = timedelta(seconds=1 / rate)
    start = max(account.next_send_at or now, now)
    horizon = now + timedelta(seconds=max(settings.worker_poll_seconds, 1.0))
    capacity = max(int((horizon - start) / interval), 0)
    return _Slots(start, interval, capacity)


async def _release(
    session: AsyncSession, recipient: Recipient, attempt: Attempt, job: Job, now: datetime
) -> None:
    """Shutdown before the send: the recipient is due again at once, as if never claimed."""
    if job.new_attempt:
        await session.execute(delete(Attempt).where(Attempt.id == attempt.id))
        recipient.attempts = max(recipient.attempts - 1, 0)
    if recipient.status in (rules.Status.queued.value, rules.Status.scheduled.value):
        recipient.next_attempt_at = now


async def sweep(session: AsyncSession) -> int:
    """Safety nets, run now and then: complete campaigns whose last recipients finished in
    concurrent transactions (each saw the other still in progress)."""
    active = (
        await session.execute(select(Campaign.id).where(Campaign.status == CampaignStatus.active))
    ).scalars()
    completed = 0
    for campaign_id in list(active):
        completed += await campaigns.complete_if_done(session, campaign_id)
    return completed

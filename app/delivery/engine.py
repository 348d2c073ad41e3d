"""The delivery engine: claim due recipients, hand their messages to providers, record.

One cycle (`run_once`) is three steps, never holding a row lock across a provider call:
1. claim, in one transaction: due recipients are locked with FOR UPDATE SKIP LOCKED (so
   several workers never take the same one), checked against their campaign, retry age,
   sending window and provider rate, then leased (`next_attempt_at` = now + lease) with an
   attempt row in status `sending`;
2. send, outside any transaction, with bounded concurrency;
3. record, in one transaction: each attempt's outcome through the status rules, 21610
   opt-outs, and the completion rule. Receipts are not looked at here: the receipt applier
   applies those that arrived before the message id once this transaction commits.

A worker killed between 1 and 3 leaves its attempts `sending` and its recipients leased;
when the lease runs out another worker claims them, asks the provider whether the message
went out (`find_sent`) and only sends when it did not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from app import metrics
from app.campaigns import repository as campaigns_repository
from app.campaigns import service as campaigns
from app.config import Settings
from app.delivery import policy
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
from app.providers.http import SOFT_SENDING_ERROR
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
    # The account's slots in this claim, which pace its sends (with not_before).
    slots: _Slots | None = None
    # Message ids the school's other attempts to this number hold: a recovery that finds
    # one of them found another campaign's message (same text), not this attempt's.
    taken: frozenset[str] = frozenset()

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
    # When this claim last let a send go for the account. A send that starts after its
    # slot (the claim took a while, the concurrency gate) keeps one interval from the one
    # before it, rather than bursting to catch up with the slots already past.
    last_send: datetime | None = None
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def next_free(self) -> datetime:
        return self.start + self.interval * self.used

    def take(self) -> datetime | None:
        if self.used >= self.capacity:
            return None
        slot = self.start + self.interval * self.used
        self.used += 1
        return slot

    async def wait_turn(self, slot: datetime, stopping: asyncio.Event) -> None:
        """Wait for `slot`, and one interval after the previous send (or for a stop)."""
        async with self.turn:
            due = slot if self.last_send is None else max(slot, self.last_send + self.interval)
            wait = (due - utcnow()).total_seconds()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), wait)
            self.last_send = utcnow()


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
            expired: set[uuid.UUID] = set()
            jobs: list[Job] = []
            for recipient, campaign, school in rows:
                job = self._claim_one(
                    session, now, recipient, campaign, school, accounts, latest, slots, expired
                )
                if job is not None:
                    jobs.append(job)
            for school_id, reserved in slots.items():
                accounts[school_id].next_send_at = reserved.next_free
            await session.flush()  # gives the new attempts their ids
            await _mark_taken(session, jobs)
            # After the flush: the completion rule reads the recipients' stored statuses.
            for campaign_id in expired:
                await campaigns.complete_if_done(session, campaign_id)
            return jobs

    def _claim_one(
        self,
        session: AsyncSession,
        now: datetime,
        recipient: Recipient,
        campaign: Campaign,
        school: School,
        accounts: dict[uuid.UUID, ProviderAccount],
        latest: dict[int, Attempt],
        slots: dict[uuid.UUID, _Slots],
        expired: set[uuid.UUID],
    ) -> Job | None:
        """Lease one due recipient for an attempt (its Job), or settle why not now."""
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
                expired.add(campaign.id)
            return None
        opening = policy.window_opening(school, now)
        if opening > now:
            recipient.next_attempt_at = opening
            return None
        account = accounts.get(school.id)
        not_before = reserved = None
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
                slots=reserved,
            )
        recipient.attempts += 1
        attempt = Attempt(recipient_id=recipient.id, provider=provider.name, status=SENDING)
        session.add(attempt)
        return Job(recipient.id, attempt, provider, message, not_before, slots=reserved)

    # -- 2. send -----------------------------------------------------------------------

    async def send(self, jobs: list[Job], stopping: asyncio.Event) -> list[Handover]:
        gate = asyncio.Semaphore(self.settings.worker_concurrency)
        recovering: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        found: set[str] = set()

        async def one(job: Job) -> Handover:
            async with gate:
                if job.slots is not None and job.not_before is not None:
                    await job.slots.wait_turn(job.not_before, stopping)
                if stopping.is_set():
                    return Handover(job, None)
                if job.recover_since is not None:
                    # The same text may have gone to one number for two attempts: those
                    # recoveries take turns, each excluding what the others found.
                    async with recovering[job.message.to, job.message.body]:
                        sid = await job.provider.find_sent(
                            job.message.to,
                            job.recover_since,
                            job.message.body,
                            exclude=job.taken | found,
                        )
                        if sid is not None:
                            found.add(sid)
                    if sid is not None:
                        log.info("attempt %s went out as %s: not sent again", job.attempt.id, sid)
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
            mismatched = await _recovered_elsewhere(session, outcomes)
            finished: set[uuid.UUID] = set()
            for outcome in outcomes:
                recipient, campaign_status, school = context[outcome.job.recipient_id]
                attempt = attempts[outcome.job.attempt.id]
                if attempt.id in mismatched:
                    outcome = Handover(outcome.job, NOT_ITS_MESSAGE)
                if outcome.result is None:
                    await _release(session, recipient, campaign_status, attempt, outcome.job, now)
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
        if _is_opt_out(result.classification):
            await opt_outs.opt_out(
                session,
                recipient.school_id,
                recipient.phone,
                source=OptOutSource.provider,
                campaign_id=recipient.campaign_id,
            )
        return recipient.status in (rules.Status.delivered.value, rules.Status.failed.value)


# A recovery found a message that another attempt holds (recorded, or found or sent in the
# same batch): this attempt's own message may or may not exist. Ask again next time.
NOT_ITS_MESSAGE = SendResult(
    Outcome.soft,
    classification=SOFT_SENDING_ERROR,
    outcome_unknown=True,
    error_message="the message found is another attempt's",
)


async def _mark_taken(session: AsyncSession, jobs: list[Job]) -> None:
    """Give each recovering job the message ids of its number's other attempts."""
    recovering = {j.recipient_id: j for j in jobs if j.recover_since is not None}
    if not recovering:
        return
    since = min(j.recover_since for j in recovering.values() if j.recover_since is not None)
    other = aliased(Recipient)
    query = (
        select(Recipient.id, Attempt.provider_message_id)
        .join(other, (other.school_id == Recipient.school_id) & (other.phone == Recipient.phone))
        .join(Attempt, Attempt.recipient_id == other.id)
        .where(
            Recipient.id.in_(list(recovering)),
            Attempt.provider_message_id.is_not(None),
            # find_sent looks from the day of `since` on (and a little before).
            Attempt.created_at >= since - timedelta(days=1),
        )
    )
    taken: dict[int, set[str]] = {}
    for recipient_id, sid in await session.execute(query):
        if sid is not None:
            taken.setdefault(recipient_id, set()).add(sid)
    for recipient_id, job in recovering.items():
        job.taken = frozenset(taken.get(recipient_id, ()))


async def _recovered_elsewhere(session: AsyncSession, outcomes: list[Handover]) -> set[int]:
    """Attempts whose recovery found a message id another attempt holds: recorded before,
    sent in this batch, or found first by another recovery of this batch (same text to the
    same number). Recording it would break the one-attempt-per-message rule."""
    recovered: list[tuple[int, tuple[str, str]]] = []
    taken: set[tuple[str, str]] = set()
    for outcome in outcomes:
        result = outcome.result
        if result is None or result.provider_message_id is None:
            continue
        key = (outcome.job.attempt.provider, result.provider_message_id)
        if outcome.job.recover_since is None:
            taken.add(key)
        else:
            recovered.append((outcome.job.attempt.id, key))
    if not recovered:
        return set()
    query = select(Attempt.provider, Attempt.provider_message_id).where(
        tuple_(Attempt.provider, Attempt.provider_message_id).in_([k for _, k in recovered])
    )
    taken.update((provider, sid) for provider, sid in await session.execute(query) if sid)
    mismatched: set[int] = set()
    for attempt_id, key in recovered:
        if key in taken:
            log.warning("attempt %s: %s is another attempt's message", attempt_id, key[1])
            mismatched.add(attempt_id)
        taken.add(key)
    return mismatched


def _is_opt_out(classification: Classification | None) -> bool:
    return classification is not None and classification.reason == "opted_out"


def _last_reason(previous: Attempt | None, code: str | None) -> str | None:
    """The final reason of the soft bounce that made a recipient scheduled.

    A soft bounce is either a soft row of the code table, or a failure the adapter made soft
    whatever its code (throttling, 5xx, timeouts, no answer at all), which it classified as
    `sending_error` (app.providers.http.SOFT_SENDING_ERROR): the same reason here, so an
    expired retry fails as the send itself would have failed once retries were over.
    """
    if previous is None:
        return None
    if code is None:
        return SOFT_SENDING_ERROR.reason
    classification = codes.classify(previous.provider, code, "receipt")
    return classification.reason if classification.soft else SOFT_SENDING_ERROR.reason


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
    session: AsyncSession,
    recipient: Recipient,
    campaign_status: CampaignStatus,
    attempt: Attempt,
    job: Job,
    now: datetime,
) -> None:
    """Shutdown before the send: the recipient is due again at once, as if never claimed
    (unless its campaign was closed or archived meanwhile: then nothing is due)."""
    if job.new_attempt:
        await session.execute(delete(Attempt).where(Attempt.id == attempt.id))
        recipient.attempts = max(recipient.attempts - 1, 0)
    waiting = recipient.status in (rules.Status.queued.value, rules.Status.scheduled.value)
    recipient.next_attempt_at = (
        now if waiting and campaign_status is CampaignStatus.active else None
    )


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

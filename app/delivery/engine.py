"""The delivery engine: claim due recipients, hand their messages to providers, record.

One cycle (`run_once`) is three steps, never holding a row lock across a provider call:
1. claim, in one transaction: due recipients are locked with FOR UPDATE SKIP LOCKED (so
   several workers never take the same one), checked against their campaign, retry age,
   sending window and provider rate, then leased (`next_attempt_at` = now + lease) and
   marked with when their hand-over began (`claimed_at`);
2. send, outside any transaction, with bounded concurrency, each send admitted just before
   it starts (`app.delivery.admission`: not if staff stopped it meanwhile);
3. record, in one transaction: each hand-over's attempt row (written now, with the
   provider's message id and status, created at `claimed_at`), the recipient's change
   through the status rules, 21610 opt-outs, and the completion rule. Receipts are not
   applied here: they are stored by the webhooks and applied by their own loop (the
   receipt applier) once their message id is recorded.

A worker killed between 1 and 3 leaves its recipients leased with `claimed_at` set; when
the lease runs out another worker claims them, asks the provider whether the message went
out since then (`find_sent`) and only sends when it did not. The same holds for an attempt
recorded as `unknown` (the provider's answer was lost). Each claim marks its recipients
with its own id (`claimed_by`): a record or release applies to a recipient only while it
is still its claim's, so a worker that outlived its lease finds the recipient taken over
and only adds the message it sent, if any.

The worker pipelines the cycles (`run_pipelined`): the record of one batch runs while the
next is claimed and sent, at most one record in flight, and a stop waits for it (`drain`).

Claim and record handle hundreds of recipients a cycle, so they read plain rows with the
columns they need (`_Row`, not ORM entities) and write each kind of change back in one
statement (`_WRITE_CLAIM`, `_WRITE_RECORD`): the ORM's identity map and unit of work cost
several times the SQL itself at that size. The rare paths (opt-outs, completion, loading
a school that changed) keep the ORM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Uuid, any_, bindparam, select, text, tuple_
from sqlalchemy.dialects.postgresql import ARRAY, distinct_on
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from app import metrics
from app.campaigns import repository as campaigns_repository
from app.campaigns import service as campaigns
from app.config import Settings
from app.delivery.admission import Admission, Candidate
from app.kit.clock import utcnow
from app.kit.db import unit_of_work
from app.models import (
    Attempt,
    Campaign,
    CampaignStatus,
    ProviderAccount,
    Recipient,
    School,
)
from app.opt_outs import service as opt_outs
from app.providers import codes
from app.providers.base import OutboundMessage, Provider, SendResult
from app.providers.http import SOFT_SENDING_ERROR
from app.providers.registry import Registry
from app.sending import message, policy
from app.sending import status as rules
from app.sending.outcomes import Classification, Outcome
from app.sending.state import apply_change, state_of

log = logging.getLogger(__name__)

# Our own attempt status: handed over, but the answer was lost (timeout, 5xx).
UNKNOWN = "unknown"
# Attempts whose outcome is not known: recovered before anything is sent again. (`sending`:
# a hand-over in flight as workers before migration b41f0c9d2e57 recorded it.)
UNRESOLVED = (UNKNOWN, "sending")
# Scheduled campaigns are looked at (to start those whose time has come) this often.
ACTIVATE_SECONDS = 1.0


@dataclass(slots=True, eq=False)
class Job:
    """One claimed recipient's hand-over."""

    recipient_id: int
    campaign_id: uuid.UUID
    # The attempt row this hand-over is recorded into: 0 for a new one (written by the
    # record), or an earlier attempt whose outcome is unknown, being recovered.
    attempt_id: int
    # The attempt's provider as stored (a recovery keeps its first hand-over's).
    attempt_provider: str
    provider: Provider
    message: OutboundMessage
    # When the hand-over began: the recipient's `claimed_at`, the new attempt's created_at.
    started: datetime
    # The claim that holds it (the recipient's `claimed_by` while it is still its claim's).
    claim: uuid.UUID
    # Earliest moment the provider's rate allows this send.
    not_before: datetime | None = None
    # The hand-over, begun at `started`, may have gone out already: ask before sending.
    recovering: bool = False
    # Ask only, never send: its campaign or recipient was stopped meanwhile, or its retry
    # age ran out (then, if the message did not go out, it fails with `expire_reason`).
    recover_only: bool = False
    expire_reason: str | None = None
    # The account's slots in this claim, which pace its sends (with not_before).
    slots: _Slots | None = None
    # Message ids the school's other attempts to this number hold: a recovery that finds
    # one of them found another campaign's message (same text), not this attempt's.
    taken: frozenset[str] = frozenset()


@dataclass
class Handover:
    job: Job
    result: SendResult | None  # None: released unsent (shutdown, or stopped meanwhile)
    expired: bool = False  # (with None) not sent because its retry age ran out


@dataclass(slots=True, eq=False)
class _Row:
    """A locked recipient's columns that the engine reads and writes (see the module
    docstring): changed in place, written back by `_write_claim` or `_write_record`."""

    id: int
    campaign_id: uuid.UUID
    school_id: uuid.UUID
    phone: str
    status: str
    failed_reason: str | None
    failed_definition: int
    provider_error_code: str | None
    attempts: int
    next_attempt_at: datetime | None
    first_attempt_at: datetime | None
    claimed_at: datetime | None
    claimed_by: uuid.UUID | None
    updated_at: datetime
    campaign_status: CampaignStatus


# `_Row`'s fields, in order.
_ROW_COLUMNS = (
    Recipient.id,
    Recipient.campaign_id,
    Recipient.school_id,
    Recipient.phone,
    Recipient.status,
    Recipient.failed_reason,
    Recipient.failed_definition,
    Recipient.provider_error_code,
    Recipient.attempts,
    Recipient.next_attempt_at,
    Recipient.first_attempt_at,
    Recipient.claimed_at,
    Recipient.claimed_by,
    Recipient.updated_at,
    Campaign.status,
)
_ROW_WIDTH = len(_ROW_COLUMNS)


def _split(found: Sequence[Any]) -> tuple[_Row, Sequence[Any]]:
    """A result row that starts with `_ROW_COLUMNS`: its `_Row`, and the columns after."""
    return _Row(*found[:_ROW_WIDTH]), found[_ROW_WIDTH:]


@dataclass(frozen=True, slots=True)
class _Previous:
    """A recipient's latest attempt, as the claim needs it."""

    id: int
    provider: str
    status: str
    created_at: datetime


@dataclass
class _Slots:
    """Send slots reserved for one provider account in this claim."""

    start: datetime
    interval: timedelta
    capacity: int
    deferred: datetime | None = None  # the last turn promised to a waiting recipient
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
        slot = self.next_free
        self.used += 1
        return slot

    def later(self) -> datetime:
        """The turn of a recipient over this claim's slots: one interval after the last
        turn promised (by any claim), or the first slot after this claim's. It is not
        due until then (a promise, not a reservation: the claim then takes a slot), so an
        account's backlog neither fills every claim, holding up other schools' recipients
        behind it, nor comes due all at once again."""
        first = self.start + self.interval * self.capacity
        turn = max(first, self.deferred + self.interval) if self.deferred else first
        self.deferred = turn
        return turn

    async def wait_turn(self, slot: datetime, stopping: asyncio.Event) -> None:
        """Wait for `slot`, and one interval after the previous send (or for a stop)."""
        async with self.turn:
            due = slot if self.last_send is None else max(slot, self.last_send + self.interval)
            wait = (due - utcnow()).total_seconds()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), wait)
            self.last_send = utcnow()


@dataclass(slots=True)
class _Sender:
    """A school's part in a claim, found once for all its recipients."""

    school: School
    opening: datetime  # of its sending window: now, or when it next opens
    account: ProviderAccount | None
    provider: Provider
    callback: str | None


@dataclass
class _Claim:
    """What one claim decided, before it is written."""

    now: datetime
    lease_until: datetime
    id: uuid.UUID = field(default_factory=uuid.uuid4)  # each leased row's `claimed_by`
    senders: dict[uuid.UUID, _Sender] = field(default_factory=dict)  # by school
    # Accounts under a rate (locked): their next free send slot and last promised turn as
    # stored, and the slots this claim takes from them.
    next_send: dict[uuid.UUID, tuple[datetime | None, datetime | None]] = field(
        default_factory=dict
    )
    slots: dict[uuid.UUID, _Slots] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)
    # Rows leased for a hand-over into `leasing` (one state for all: `_WRITE_CLAIM`), and
    # any other row changed (written back whole).
    leasing: rules.Change | None = None
    leased: list[_Row] = field(default_factory=list)
    changed: list[_Row] = field(default_factory=list)
    expired: set[uuid.UUID] = field(default_factory=set)  # campaigns with a retry expired
    # Each campaign's body, parsed once for all its recipients in the claim.
    templates: dict[uuid.UUID, Callable[[Mapping[str, Any]], str]] = field(default_factory=dict)

    def lease(self, row: _Row, change: rules.Change) -> None:
        """Lease the row for a hand-over, into the state the status rules gave."""
        self.leasing = self.leasing or change
        if change == self.leasing:
            self.leased.append(row)  # its attempts, first attempt and claimed_at set
        else:  # (the rules give every hand-over one state: never so far)
            apply_change(row, change, now=self.now)
            row.next_attempt_at = self.lease_until
            row.claimed_by = self.id
            self.changed.append(row)


@dataclass
class Engine:
    sessionmaker: async_sessionmaker[AsyncSession]
    settings: Settings
    registry: Registry
    rng: random.Random = field(default_factory=random.Random)
    # The record of the last batch `run_pipelined` sent, while it runs.
    _recording: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _activated: float = field(default=-ACTIVATE_SECONDS, init=False, repr=False)
    _schools: _Schools = field(default_factory=lambda: _Schools(), init=False, repr=False)
    # Due recipients the last claim leased or settled (deferred, moved, stopped).
    _dealt_with: int = field(default=0, init=False, repr=False)

    async def run_once(self, stopping: asyncio.Event | None = None) -> int:
        """One claim-send-record cycle, recorded when it returns; the number claimed."""
        await self.activate_due()
        with metrics.claim_seconds.time():
            jobs = await self.claim()
        if not jobs:
            return 0
        outcomes = await self.send(jobs, stopping or asyncio.Event())
        await self.record(outcomes)
        return len(jobs)

    async def run_pipelined(self, stopping: asyncio.Event) -> int:
        """One cycle whose record runs on while the next cycle claims and sends (at most
        one record in flight; a cycle that found less than a full batch records before it
        returns, so an idle worker has nothing in flight). `drain` waits for the record.
        The number of due recipients the claim dealt with, sent or not (a full batch:
        more may be due at once).

        Records stay in batch order: batch N is recorded before batch N+1's record starts,
        so N+1's recoveries see the message ids N recorded (`_recovered_elsewhere`). A
        batch sent while N is recorded is leased, so no claim takes its recipients again.
        """
        await self.activate_due()
        with metrics.claim_seconds.time():
            jobs = await self.claim()
        outcomes = await self.send(jobs, stopping) if jobs else []
        await self.drain()
        if outcomes:
            self._recording = asyncio.create_task(self.record(outcomes))
            if len(jobs) < self.settings.worker_batch_size:
                await self.drain()
        return self._dealt_with

    async def drain(self) -> None:
        """Wait for the record in flight, if any. Its failure is logged, not raised: the
        cycle that waits has sent its own batch and must still record it. The failed
        batch's recipients stay leased with `claimed_at` set, and are recovered when their
        lease runs out."""
        recording, self._recording = self._recording, None
        if recording is None:
            return
        try:
            await recording
        except Exception:
            log.exception("recording a sent batch failed; its lease will recover it")

    async def activate_due(self) -> None:
        """Start the scheduled campaigns whose time has come: at most once a second (so
        within a second of their time), not in each of the many claims a second."""
        if time.monotonic() - self._activated < ACTIVATE_SECONDS:
            return
        async with unit_of_work(self.sessionmaker) as session:
            await campaigns_repository.activate_due(session, utcnow())
        self._activated = time.monotonic()

    # -- 1. claim ----------------------------------------------------------------------

    async def claim(self) -> list[Job]:
        async with unit_of_work(self.sessionmaker) as session:
            now = utcnow()
            # Plain rows from the connection: the session's ORM result layer costs more
            # than the query for a few hundred rows. (Not straight from the driver: the
            # transaction's BEGIN goes out with SQLAlchemy's first statement, and a lock
            # taken before it would be released at once.)
            connection = await session.connection()
            found = (
                await connection.execute(
                    _CLAIM, {"now": now, "limit": self.settings.worker_batch_size}
                )
            ).all()
            self._dealt_with = 0
            if not found:
                return []
            # Each row ends with its school's and account's versions (`_CLAIM`).
            versions = {r[2]: (r[-2], r[-1]) for r in found}
            schools, accounts = await self._schools.get(session, versions)
            claim = _Claim(now, now + timedelta(seconds=self.settings.worker_lease_seconds))
            claim.next_send = await _lock_rated(connection, accounts)
            for school_id, school in schools.items():
                account = accounts.get(school_id)
                provider = self.registry.for_account(account)
                claim.senders[school_id] = _Sender(
                    school,
                    # Once per school and claim: the window does not move within it.
                    policy.window_opening(school, now),
                    account,
                    provider,
                    self.registry.callback_url(provider.name),
                )
            for found_row in found:
                self._claim_one(claim, found_row)
            await _write_claim(connection, claim)
            await _mark_taken(session, claim.jobs)
            # After the write: the completion rule reads the recipients' stored statuses.
            await campaigns.complete_finished(session, claim.expired)
            self._dealt_with = len(claim.leased) + len(claim.changed)
            return claim.jobs

    def _claim_one(self, claim: _Claim, found: Sequence[Any]) -> None:
        """Lease one due recipient for an attempt (a Job), or settle why not now."""
        row, (body, first_name, last_name, fields, *latest) = _split(found)
        previous = _Previous(*latest[:4]) if latest[0] is not None else None
        sender = claim.senders[row.school_id]
        school = sender.school
        now = claim.now
        state = state_of(row)
        if row.campaign_status is CampaignStatus.scheduled:
            return  # its send_at came: it starts within a second (`activate_due`), still due
        stopped = (
            row.campaign_status is not CampaignStatus.active or state.status not in rules.WAITING
        )
        if stopped and row.claimed_at is None:
            row.next_attempt_at = None  # nothing is due here (defensive)
            claim.changed.append(row)
            return
        names = (first_name, last_name, fields)
        if stopped:
            # Closed, archived or opted out during a hand-over whose worker then died: its
            # message may have gone out, and its receipts need its id.
            self._add_job(claim, row, sender, previous, body, names, recover_only=True)
            return
        if state.status is rules.Status.scheduled and not policy.retry_allowed(school, row, now):
            last = _last_reason(previous, row.provider_error_code)
            if previous is not None and previous.status in UNRESOLVED:
                # Its last answer was lost: that message may have gone out after all. Ask
                # first (still Scheduled meanwhile); it fails only if it did not.
                self._add_job(
                    claim, row, sender, previous, body, names, recover_only=True, expire=last
                )
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
                reserved = _slots_for(account, stored, now, self.settings)
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
        self._add_job(claim, row, sender, previous, body, names, not_before, reserved)

    def _add_job(
        self,
        claim: _Claim,
        row: _Row,
        sender: _Sender,
        previous: _Previous | None,
        body: str,
        names: tuple[str | None, str | None, Mapping[str, Any]],
        not_before: datetime | None = None,
        slots: _Slots | None = None,
        *,
        recover_only: bool = False,
        expire: str | None = None,
    ) -> None:
        """The hand-over of a leased recipient: a new one, or the recovery of one begun
        before (its lease ran out, or its provider's answer was lost). `recover_only`: the
        row is leased here as it stands, for a job that only asks the provider whether its
        last hand-over went out (recorded if it did), and never sends."""
        now = claim.now
        if recover_only:
            row.next_attempt_at = claim.lease_until
            row.claimed_by = claim.id
            claim.changed.append(row)
        first_name, last_name, fields = names
        provider = sender.provider
        render = claim.templates.get(row.campaign_id)
        if render is None:
            render = claim.templates[row.campaign_id] = message.template(body)
        contact = {
            "phone": row.phone,
            "first_name": first_name,
            "last_name": last_name,
            "fields": fields,
        }
        outbound = OutboundMessage(row.phone, render(contact), sender.callback)
        if previous is not None and previous.status in UNRESOLVED:
            # The provider's answer to that attempt was lost: the same hand-over goes on in
            # the same attempt, asking first whether the message went out.
            row.claimed_at = previous.created_at
            attempt_id, attempt_provider, recovering = previous.id, previous.provider, True
        elif row.claimed_at is not None:
            # A lease ran out during the hand-over (its worker died before the record):
            # ask whether the message went out since it began.
            attempt_id, attempt_provider, recovering = 0, provider.name, True
        else:
            row.attempts += 1
            row.claimed_at = now
            attempt_id, attempt_provider, recovering = 0, provider.name, False
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
                recover_only=recover_only,
                expire_reason=expire,
                slots=slots,
            )
        )

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
                if job.recovering:
                    # The same text may have gone to one number for two attempts: those
                    # recoveries take turns, each excluding what the others found.
                    async with recovering[job.message.to, job.message.body]:
                        sid = await job.provider.find_sent(
                            job.message.to,
                            job.started,
                            job.message.body,
                            exclude=job.taken | found,
                        )
                        if sid is not None:
                            found.add(sid)
                    if sid is not None:
                        log.info("attempt %s went out as %s: not sent again", job.attempt_id, sid)
                        return Handover(job, SendResult(Outcome.accepted, sid, "queued"))
                if job.recover_only:
                    return Handover(job, None, expired=job.expire_reason is not None)
                candidate = Candidate(job.recipient_id, job.campaign_id, job.claim)
                if not await admission.admit(candidate):
                    return Handover(job, None)  # stopped meanwhile (close, archive, opt-out)
                try:
                    return Handover(job, await job.provider.send(job.message))
                finally:
                    admission.release(candidate)  # answered: a stop may go ahead

        # A connection for the admissions, outside any transaction (a unit of work that
        # writes nothing: committing it leaves a test's enclosing transaction as it was).
        async with unit_of_work(self.sessionmaker) as session:
            admission = Admission(await session.connection(), stopping)
            try:
                return list(await asyncio.gather(*(one(job) for job in jobs)))
            finally:
                await admission.finish()

    # -- 3. record ---------------------------------------------------------------------

    async def record(self, outcomes: list[Handover]) -> None:
        """Record a sent batch. A connection the database dropped since its last use (a
        restart, a failover: the pool pings only connections that rested, see
        `app.kit.db.CHECK_AFTER_SECONDS`) fails the first statement and is replaced with
        the rest of the pool, so the batch is recorded once more on a new one rather
        than left to its lease. Any other failure is the caller's."""
        try:
            await self._record(outcomes)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            log.warning("recording a sent batch lost its connection (%s): once more", error)
            await self._record(outcomes)
        for outcome in outcomes:
            if outcome.result is not None:
                provider = outcome.job.attempt_provider
                metrics.messages_sent.labels(provider, outcome.result.outcome.value).inc()

    async def _record(self, outcomes: list[Handover]) -> None:
        async with unit_of_work(self.sessionmaker) as session:
            now = utcnow()
            ids = sorted({o.job.recipient_id for o in outcomes})
            connection = await session.connection()  # plain rows, as in the claim
            found = await connection.execute(_RECORD, {"ids": ids})
            rows = {row.id: row for row in (_split(f)[0] for f in found)}
            schools = await _load_schools(session, {row.school_id for row in rows.values()})
            mismatched = await _recovered_elsewhere(session, outcomes)
            attempts = _Attempts()
            written: list[_Row] = []
            opted_out: list[_Row] = []
            finished: set[uuid.UUID] = set()
            for outcome in outcomes:
                job = outcome.job
                row = rows[job.recipient_id]
                # Still this claim's recipient, unless its lease ran out and another claim
                # took it over (and maybe recorded it already).
                ours = row.claimed_by == job.claim
                if job.recipient_id in mismatched:
                    outcome = Handover(job, NOT_ITS_MESSAGE)
                result = outcome.result
                if result is None:
                    if ours:
                        if outcome.expired:
                            _expire(row, job)
                            finished.add(row.campaign_id)
                        else:
                            _release(row, job, now)
                        written.append(row)
                    continue
                if _is_opt_out(result.classification):
                    opted_out.append(row)  # whoever records it: an opt-out is never lost
                if not ours:
                    if result.provider_message_id is not None:
                        # A message that exists (its receipts need it), as an attempt of its
                        # own: the attempt it recovered is the other claim's to record.
                        attempts.add(job, result, new=True)
                    continue
                attempts.add(job, result)
                row.claimed_at = row.claimed_by = None
                self._record_one(row, schools, result, now)
                written.append(row)
                if row.status in (rules.Status.delivered.value, rules.Status.failed.value):
                    finished.add(row.campaign_id)
            await _write_record(session, written, attempts, now)
            # After the writes: the opt-out cancels the number's other waiting recipients
            # as they now stand (this batch's included, their rows locked above).
            await opt_outs.opted_out_at_provider(session, opted_out)
            await campaigns.complete_finished(session, finished)

    def _record_one(
        self, row: _Row, schools: dict[uuid.UUID, School], result: SendResult, now: datetime
    ) -> None:
        """The recipient's change for one send result (its attempt's is the caller's)."""
        school = schools[row.school_id]
        change = rules.on_send_result(
            state_of(row),
            row.campaign_status,
            result.outcome,
            result.classification,
            result.error_code,
            retry_allowed=policy.retry_allowed(school, row, now),
        )
        if change is not None:
            due = None
            if change.retry:
                due = policy.retry_due(school, row, now, result.retry_after_seconds, self.rng)
            apply_change(row, change, due, now)
        elif row.next_attempt_at is not None and row.status != rules.Status.scheduled.value:
            row.next_attempt_at = None  # our lease: nothing more is due


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
    recovering = {j.recipient_id: j for j in jobs if j.recovering}
    if not recovering:
        return
    since = min(j.started for j in recovering.values())
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
    """The recipients whose recovery found a message id another attempt holds: recorded
    before, sent in this batch, or found first by another recovery of this batch (same text
    to the same number). Recording it would break the one-attempt-per-message rule."""
    recovered: list[tuple[int, tuple[str, str]]] = []
    taken: set[tuple[str, str]] = set()
    for outcome in outcomes:
        result = outcome.result
        if result is None or result.provider_message_id is None:
            continue
        key = (outcome.job.attempt_provider, result.provider_message_id)
        if not outcome.job.recovering:
            taken.add(key)
        else:
            recovered.append((outcome.job.recipient_id, key))
    if not recovered:
        return set()
    query = select(Attempt.provider, Attempt.provider_message_id).where(
        tuple_(Attempt.provider, Attempt.provider_message_id).in_([k for _, k in recovered])
    )
    taken.update((provider, sid) for provider, sid in await session.execute(query) if sid)
    mismatched: set[int] = set()
    for recipient_id, key in recovered:
        if key in taken:
            log.warning("recipient %s: %s is another attempt's message", recipient_id, key[1])
            mismatched.add(recipient_id)
        taken.add(key)
    return mismatched


def _is_opt_out(classification: Classification | None) -> bool:
    return classification is not None and classification.reason == "opted_out"


def _last_reason(previous: _Previous | None, code: str | None) -> str | None:
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


@dataclass
class _Schools:
    """Schools and their provider accounts as of their last change: the claim reads their
    versions (`updated_at`) with its rows, and loads a school again only when it changed
    (a claim a few times a second, a school changed now and then)."""

    Versions = tuple[datetime, datetime | None]  # the school's, its account's (if any)
    known: dict[uuid.UUID, tuple[Versions, School, ProviderAccount | None]] = field(
        default_factory=dict
    )

    async def get(
        self, session: AsyncSession, versions: dict[uuid.UUID, Versions]
    ) -> tuple[dict[uuid.UUID, School], dict[uuid.UUID, ProviderAccount]]:
        changed = [i for i, v in versions.items() if self.known.get(i, (None,))[0] != v]
        if changed:
            query = (
                select(School, ProviderAccount)
                .outerjoin(ProviderAccount, ProviderAccount.school_id == School.id)
                .where(School.id.in_(changed))
            )
            for school, account in await session.execute(query):
                version = (school.updated_at, account.updated_at if account else None)
                # Out of the session: kept as loaded, whatever becomes of its transaction.
                session.expunge(school)
                if account is not None:
                    session.expunge(account)
                self.known[school.id] = (version, school, account)
        schools = {i: self.known[i][1] for i in versions}
        accounts = {i: a for i in versions if (a := self.known[i][2]) is not None}
        return schools, accounts


async def _lock_rated(
    connection: AsyncConnection, accounts: dict[uuid.UUID, ProviderAccount]
) -> dict[uuid.UUID, tuple[datetime | None, datetime | None]]:
    """The next free send slot and last promised turn of each account under a rate,
    locked: claims in other worker processes for that account queue behind this one until
    it commits what it took (`_write_claim`)."""
    rated = sorted(i for i, account in accounts.items() if account.max_messages_per_second)
    if not rated:
        return {}
    found = await connection.execute(_LOCK_RATED, {"ids": rated})
    return {school_id: (next_send_at, deferred) for school_id, next_send_at, deferred in found}


def _slots_for(
    account: ProviderAccount,
    stored: tuple[datetime | None, datetime | None],
    now: datetime,
    settings: Settings,
) -> _Slots:
    """The account's next send slots that begin within the coming poll interval (at
    least a second): one every `interval`, from the next free one on. Under 1 message a
    second, that is one slot whenever the next free one is that close."""
    next_send_at, deferred_until = stored
    rate = float(account.max_messages_per_second or 0)
    interval = timedelta(seconds=1 / rate)
    start = max(next_send_at or now, now)
    horizon = now + timedelta(seconds=max(settings.worker_poll_seconds, 1.0))
    capacity = -((start - horizon) // interval) if start < horizon else 0  # ceiling
    return _Slots(start, interval, capacity, deferred_until)


def _expire(row: _Row, job: Job) -> None:
    """Its retry age ran out and its last hand-over did not go out: it fails with the
    reason of its last soft bounce."""
    row.claimed_at = row.claimed_by = None
    change = rules.on_retry_expired(state_of(row), job.expire_reason)
    if change is not None:
        apply_change(row, change)


def _release(row: _Row, job: Job, now: datetime) -> None:
    """Not sent (a shutdown, or its admission refused it): the recipient is due again at
    once, as if never claimed (unless its campaign was closed or archived, or it opted out,
    meanwhile: then nothing is due). A recovery stays one: the hand-over it took over may
    still have gone out."""
    if not job.recovering:
        row.attempts = max(row.attempts - 1, 0)
        row.claimed_at = None
    row.claimed_by = None
    waiting = state_of(row).status in rules.WAITING
    active = row.campaign_status is CampaignStatus.active
    row.next_attempt_at = now if waiting and active else None


async def _load_schools(
    session: AsyncSession, school_ids: set[uuid.UUID]
) -> dict[uuid.UUID, School]:
    query = select(School).where(School.id.in_(school_ids))
    return {s.id: s for s in (await session.execute(query)).scalars()}


# The claim: due recipients, locked, as `_Row`s followed by what the hand-over needs (the
# campaign's body, the merge fields), the recipient's latest attempt (`_Previous`), and
# last the versions of its school and provider account (`_Schools`).
# The latest attempts are found by recipient id among the due ones (DISTINCT ON), never
# with ORDER BY id DESC LIMIT 1 per recipient: with the attempts table's statistics
# behind its growth the planner may walk the primary key backwards for that, through
# every attempt for a recipient that has none.
_due = (
    select(
        *_ROW_COLUMNS,
        Campaign.body,
        Recipient.first_name,
        Recipient.last_name,
        Recipient.fields,
        School.updated_at.label("school_version"),
        ProviderAccount.updated_at.label("account_version"),
    )
    .join(Campaign, Campaign.id == Recipient.campaign_id)
    .join(School, School.id == Recipient.school_id)
    .outerjoin(ProviderAccount, ProviderAccount.school_id == Recipient.school_id)
    .where(Recipient.next_attempt_at <= bindparam("now"))
    .order_by(Recipient.next_attempt_at)
    .limit(bindparam("limit"))
    .with_for_update(of=Recipient, skip_locked=True)
    .cte("due")
)
_latest = (
    select(Attempt.recipient_id, Attempt.id, Attempt.provider, Attempt.status, Attempt.created_at)
    # A first hand-over (no attempt counted yet) has no attempt to look for.
    .where(Attempt.recipient_id.in_(select(_due.c.id).where(_due.c.attempts > 0)))
    .order_by(Attempt.recipient_id, Attempt.id.desc())
    .ext(distinct_on(Attempt.recipient_id))
    .subquery("latest")
)
_CLAIM = (
    select(
        *(c for c in _due.c if not c.name.endswith("_version")),
        _latest.c.id,
        _latest.c.provider,
        _latest.c.status,
        _latest.c.created_at,
        _due.c.school_version,
        _due.c.account_version,
    )
    .select_from(_due)
    .outerjoin(_latest, _latest.c.recipient_id == _due.c.id)
    .order_by(_due.c.next_attempt_at)  # the longest due take the first rate slots
)

# The record: the batch's recipients, locked in id order (as opt-outs lock them).
_RECORD = (
    select(*_ROW_COLUMNS)
    .join(Campaign, Campaign.id == Recipient.campaign_id)
    .where(Recipient.id == any_(bindparam("ids", type_=ARRAY(BigInteger))))
    .order_by(Recipient.id)
    .with_for_update(of=Recipient)
)

# `_Row`s written back, all columns the engine may change, one statement for the batch
# (`updated_at` is the statement's `now`: the rows are updated then).
_WRITTEN = (
    "id",
    "status",
    "failed_reason",
    "failed_definition",
    "provider_error_code",
    "attempts",
    "next_attempt_at",
    "first_attempt_at",
    "claimed_at",
    "claimed_by",
)
_UPDATE_RECIPIENTS = """
    UPDATE recipients AS r
    SET status = v.status, failed_reason = v.failed_reason,
        failed_definition = v.failed_definition, provider_error_code = v.provider_error_code,
        attempts = v.attempts, next_attempt_at = v.next_attempt_at,
        first_attempt_at = v.first_attempt_at, claimed_at = v.claimed_at,
        claimed_by = v.claimed_by, updated_at = :now
    FROM unnest(
        CAST(:id AS bigint[]), CAST(:status AS text[]), CAST(:failed_reason AS text[]),
        CAST(:failed_definition AS int[]), CAST(:provider_error_code AS text[]),
        CAST(:attempts AS int[]), CAST(:next_attempt_at AS timestamptz[]),
        CAST(:first_attempt_at AS timestamptz[]), CAST(:claimed_at AS timestamptz[]),
        CAST(:claimed_by AS uuid[])
    ) AS v (id, status, failed_reason, failed_definition, provider_error_code, attempts,
            next_attempt_at, first_attempt_at, claimed_at, claimed_by)
    WHERE r.id = v.id
"""

# The claim's write, one statement: the recipients settled without a hand-over (rare),
# then the leased ones, all into one state, with their own attempt counts and times.
_WRITE_CLAIM = text(
    f"""
    WITH settled AS ({_UPDATE_RECIPIENTS})
    UPDATE recipients AS r
    SET status = :leased_status, failed_reason = :leased_failed_reason,
        failed_definition = :leased_failed_definition,
        provider_error_code = :leased_provider_error_code, next_attempt_at = :lease_until,
        attempts = v.attempts, first_attempt_at = v.first_attempt_at,
        claimed_at = v.claimed_at, claimed_by = :claim, updated_at = :now
    FROM unnest(
        CAST(:leased_id AS bigint[]), CAST(:leased_attempts AS int[]),
        CAST(:leased_first_attempt_at AS timestamptz[]),
        CAST(:leased_claimed_at AS timestamptz[])
    ) AS v (id, attempts, first_attempt_at, claimed_at)
    WHERE r.id = v.id
    """
)

# Accounts under a rate: locked in one order, and given their next free send slot.
_LOCK_RATED = (
    select(ProviderAccount.school_id, ProviderAccount.next_send_at, ProviderAccount.deferred_until)
    .where(ProviderAccount.school_id == any_(bindparam("ids", type_=ARRAY(Uuid))))
    .order_by(ProviderAccount.school_id)
    .with_for_update()
)
_NEXT_SEND = text(
    """
    UPDATE provider_accounts AS a
    SET next_send_at = v.next_send_at, deferred_until = v.deferred_until
    FROM unnest(
        CAST(:school_id AS uuid[]),
        CAST(:next_send_at AS timestamptz[]),
        CAST(:deferred_until AS timestamptz[])
    ) AS v (school_id, next_send_at, deferred_until)
    WHERE a.school_id = v.school_id
    """
)

# The record's writes, one statement: the attempts recovered (an accepted one keeps the
# error code it had), the new attempts (a message id already recorded, by a worker that
# took the hand-over over, is not recorded twice), then the recipients.
_WRITE_RECORD = text(
    f"""
    WITH recovered AS (
        UPDATE attempts AS a
        SET provider_message_id = coalesce(o.provider_message_id, a.provider_message_id),
            status = o.status,
            error_code = CASE WHEN o.failed THEN o.error_code ELSE a.error_code END,
            updated_at = :now
        FROM unnest(
            CAST(:attempt_id AS bigint[]), CAST(:recovered_message_id AS text[]),
            CAST(:recovered_status AS text[]), CAST(:failed AS boolean[]),
            CAST(:recovered_error_code AS text[])
        ) AS o (id, provider_message_id, status, failed, error_code)
        WHERE a.id = o.id
    ),
    created AS (
        INSERT INTO attempts (recipient_id, provider, provider_message_id, status, error_code,
                              created_at, updated_at)
        SELECT n.recipient_id, n.provider, n.provider_message_id, n.status, n.error_code,
               n.created_at, :now
        FROM unnest(
            CAST(:recipient_id AS bigint[]), CAST(:provider AS text[]),
            CAST(:provider_message_id AS text[]), CAST(:attempt_status AS text[]),
            CAST(:error_code AS text[]), CAST(:created_at AS timestamptz[])
        ) AS n (recipient_id, provider, provider_message_id, status, error_code, created_at)
        ON CONFLICT (provider, provider_message_id) DO NOTHING
    )
    {_UPDATE_RECIPIENTS}
    """
)


def _written(rows: Iterable[_Row]) -> dict[str, list[Any]]:
    """`_UPDATE_RECIPIENTS`'s parameters: one array per column."""
    rows = list(rows)
    return {name: [getattr(row, name) for row in rows] for name in _WRITTEN}


async def _write_claim(connection: AsyncConnection, claim: _Claim) -> None:
    if claim.leased or claim.changed:
        # (No row leased: the leased part updates nothing, whatever its state.)
        state = claim.leasing.state if claim.leasing else rules.State(rules.Status.queued)
        leased = claim.leased
        await connection.execute(
            _WRITE_CLAIM,
            {
                **_written(claim.changed),
                "leased_status": state.status.value,
                "leased_failed_reason": state.failed_reason,
                "leased_failed_definition": state.definition,
                "leased_provider_error_code": state.provider_error_code,
                "lease_until": claim.lease_until,
                "claim": claim.id,
                "leased_id": [row.id for row in leased],
                "leased_attempts": [row.attempts for row in leased],
                "leased_first_attempt_at": [row.first_attempt_at for row in leased],
                "leased_claimed_at": [row.claimed_at for row in leased],
                "now": claim.now,
            },
        )
    if claim.slots:
        await connection.execute(
            _NEXT_SEND,
            {
                "school_id": list(claim.slots),
                "next_send_at": [reserved.next_free for reserved in claim.slots.values()],
                "deferred_until": [reserved.deferred for reserved in claim.slots.values()],
            },
        )


def _outcome(result: SendResult) -> tuple[str | None, str, bool, str | None]:
    """What an attempt row records of a send result: message id, status, failed, error."""
    if result.outcome is Outcome.accepted:
        assert result.provider_message_id is not None
        return result.provider_message_id, result.provider_status or "queued", False, None
    status = UNKNOWN if result.outcome_unknown else "failed"
    return result.provider_message_id, status, True, result.error_code


@dataclass
class _Attempts:
    """The attempt rows a record writes: new ones, and recovered ones (their ids known)."""

    created: list[tuple[Any, ...]] = field(default_factory=list)
    recovered: list[tuple[Any, ...]] = field(default_factory=list)

    def add(self, job: Job, result: SendResult, new: bool = False) -> None:
        sid, status, failed, code = _outcome(result)
        if job.attempt_id and not new:
            self.recovered.append((job.attempt_id, sid, status, failed, code))
        else:
            self.created.append(
                (job.recipient_id, job.attempt_provider, sid, status, code, job.started)
            )


_CREATED = (
    "recipient_id",
    "provider",
    "provider_message_id",
    "attempt_status",
    "error_code",
    "created_at",
)
_RECOVERED = (
    "attempt_id",
    "recovered_message_id",
    "recovered_status",
    "failed",
    "recovered_error_code",
)


def _columns(names: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> dict[str, list[Any]]:
    """Rows as unnest parameters: one array per column."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return {name: list(column) for name, column in zip(names, columns, strict=True)}


async def _write_record(
    session: AsyncSession, rows: Iterable[_Row], attempts: _Attempts, now: datetime
) -> None:
    await session.execute(
        _WRITE_RECORD,
        {
            **_written(rows),
            **_columns(_CREATED, attempts.created),
            **_columns(_RECOVERED, attempts.recovered),
            "now": now,
        },
    )


async def sweep(session: AsyncSession) -> int:
    """Safety nets, run now and then: complete campaigns whose last recipients finished in
    concurrent transactions (each saw the other still in progress)."""
    active = (
        await session.execute(select(Campaign.id).where(Campaign.status == CampaignStatus.active))
    ).scalars()
    return await campaigns.complete_finished(session, list(active))

"""Prototypes of proposed delivery-engine changes, measured by bench/dispatch.py only.

    python bench/engine_variants.py VARIANT[,VARIANT...] worker

Patches `app.delivery.engine.Engine` (and, for split-pool, the provider registry) in this
process, then runs `campanile worker` exactly as the CLI does. Nothing in app/ imports
this; it exists to put numbers on the changes proposed for app/delivery/engine.py. The
copied methods (claim/_claim_one, record/_record_one) are engine.py's as of sha1
eeb7fe9cad89, with each change marked NEW; they are measured by the benchmarks only, not
tested: evidence for a proposal, not a patch.

Variants:
- `batched-record`: the record step takes the advisory locks of all accepted message ids
  in one statement, flushes once, and looks for receipts waiting for any of them in one
  query (then applies only those found), instead of lock + flush + select per message.
- `pipelined`: the record of batch N runs as a task while batch N+1 is claimed and sent
  (at most one record in flight); a stop waits for it.
- `lean-claim`: the claim leases the recipients that get an attempt with one UPDATE
  (... WHERE id = ANY(:ids)) and creates their attempts with one INSERT ... SELECT unnest
  RETURNING, instead of ORM attribute writes, session.add and a unit-of-work flush per
  object; the rare outcomes (inactive campaign, expired retries, window, rate) keep the
  ORM path.
- `split-pool`: the providers' HTTP calls go round-robin over 5 httpx.AsyncClients (same
  timeouts) instead of one, so each connection pool holds a fifth of the connections:
  httpcore's pool does O(connections x requests) work on every request
  (`_assign_requests_to_connections`, a socket poll per idle connection).
- `count`: changes nothing; counts the SQL statements the worker sends (each execute or
  executemany is one round trip) by kind, and prints them to stderr at exit as lines
  starting with `bench-statements:`.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import sys
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import event, select, text
from sqlalchemy.engine import Engine as SqlEngine
from sqlalchemy.ext.asyncio import AsyncSession

from app import cli, metrics
from app.campaigns import repository as campaigns_repository
from app.campaigns import service as campaigns
from app.delivery import engine, policy, receipts
from app.delivery import status as rules
from app.kit.clock import utcnow
from app.kit.db import unit_of_work
from app.models import Attempt, Campaign, CampaignStatus, OptOutSource, Recipient, School
from app.models import Receipt as StoredReceipt
from app.opt_outs import service as opt_outs
from app.providers.base import OutboundMessage, Outcome
from app.providers.registry import Registry
from app.recipients import service as recipients
from app.workers.delivery import DeliveryWorker

LOCK_ALL = text(
    "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) "
    "FROM unnest(CAST(:keys AS text[])) AS k"
)


async def lock_and_release_waiting(session: AsyncSession, accepted: list[Attempt]) -> set[int]:
    """NEW: receipts.lock_message for every accepted id (sorted: one order for everyone),
    one flush, then receipts.apply_waiting only where a receipt waits. Returns the ids of
    the attempts that had waiting receipts."""
    if not accepted:
        return set()
    keys = sorted({f"{a.provider}:{a.provider_message_id}" for a in accepted})
    await session.execute(LOCK_ALL, {"keys": keys})
    await session.flush()  # the ids, written under their locks
    by_id: dict[tuple[str, str], Attempt] = {}
    for attempt in accepted:
        assert attempt.provider_message_id is not None
        by_id[(attempt.provider, attempt.provider_message_id)] = attempt
    released: set[int] = set()
    for provider in {p for p, _ in by_id}:
        sids = [sid for p, sid in by_id if p == provider]
        query = (
            select(StoredReceipt.provider_message_id)
            .where(
                StoredReceipt.provider == provider,
                StoredReceipt.provider_message_id.in_(sids),
                StoredReceipt.applied_at.is_(None),
            )
            .distinct()
        )
        for sid in (await session.execute(query)).scalars():
            attempt = by_id[(provider, sid)]
            await receipts.apply_waiting(session, attempt)
            released.add(attempt.id)
    return released


async def batched_record(self: engine.Engine, outcomes: list[engine.Handover]) -> None:
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
        latest = await engine._latest_attempts(session, ids)
        mismatched = await engine._recovered_elsewhere(session, outcomes)
        finished: set[uuid.UUID] = set()
        accepted: list[Attempt] = []  # NEW
        for outcome in outcomes:
            recipient, campaign_status, school = context[outcome.job.recipient_id]
            attempt = attempts[outcome.job.attempt.id]
            if attempt.id in mismatched:
                outcome = engine.Handover(outcome.job, engine.NOT_ITS_MESSAGE)
            if outcome.result is None:
                await engine._release(
                    session, recipient, campaign_status, attempt, outcome.job, now
                )
                continue
            if await batched_record_one(
                self,
                session,
                now,
                recipient,
                campaign_status,
                school,
                attempt,
                latest,
                outcome,
                accepted,
            ):
                finished.add(recipient.campaign_id)
        # NEW: a waiting receipt may have made its recipient final.
        for attempt_id in await lock_and_release_waiting(session, accepted):
            recipient = context[attempts[attempt_id].recipient_id][0]
            if recipient.status in (rules.Status.delivered.value, rules.Status.failed.value):
                finished.add(recipient.campaign_id)
        await session.flush()
        for campaign_id in finished:
            await campaigns.complete_if_done(session, campaign_id)


async def batched_record_one(
    self: engine.Engine,
    session: AsyncSession,
    now: datetime,
    recipient: Recipient,
    campaign_status: CampaignStatus,
    school: School,
    attempt: Attempt,
    latest: dict[int, Attempt],
    outcome: engine.Handover,
    accepted: list[Attempt],
) -> bool:
    result = outcome.result
    assert result is not None
    metrics.messages_sent.labels(attempt.provider, result.outcome.value).inc()
    attempt.updated_at = now
    if result.outcome is Outcome.accepted:
        assert result.provider_message_id is not None
        attempt.provider_message_id = result.provider_message_id
        attempt.status = result.provider_status or "queued"
    else:
        attempt.status = engine.UNKNOWN if result.outcome_unknown else "failed"
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
        recipient.next_attempt_at = None
    if result.outcome is Outcome.accepted:
        accepted.append(attempt)  # NEW: locked, flushed and looked up with the others
    elif engine._is_opt_out(result.classification):
        await opt_outs.opt_out(
            session,
            recipient.school_id,
            recipient.phone,
            source=OptOutSource.provider,
            campaign_id=recipient.campaign_id,
        )
    return recipient.status in (rules.Status.delivered.value, rules.Status.failed.value)


LEASE = text(
    """
    UPDATE recipients SET status = :status, failed_reason = NULL, failed_definition = 0,
           provider_error_code = NULL, next_attempt_at = :lease_until,
           first_attempt_at = coalesce(first_attempt_at, :now),
           attempts = attempts + CASE WHEN id = ANY(:new) THEN 1 ELSE 0 END,
           updated_at = :now
    WHERE id = ANY(:ids)
    """
)
NEW_ATTEMPTS = text(
    """
    INSERT INTO attempts (recipient_id, provider, status)
    SELECT r, p, :status FROM unnest(CAST(:recipients AS bigint[]), CAST(:providers AS text[]))
        AS t (r, p)
    RETURNING id, recipient_id, created_at, updated_at
    """
)
LEASED = rules.State(rules.Status.queued)


async def lean_claim(self: engine.Engine) -> list[engine.Job]:
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
        accounts = await engine._accounts(session, {school.id for _, _, school in rows})
        latest = await engine._latest_attempts(session, [r.id for r, _, _ in rows])
        slots: dict[uuid.UUID, engine._Slots] = {}
        expired: set[uuid.UUID] = set()
        jobs: list[engine.Job] = []
        leased: list[int] = []  # NEW: written below in one statement
        for recipient, campaign, school in rows:
            job = lean_claim_one(
                self, session, now, recipient, campaign, school, accounts, latest, slots, expired
            )
            if job is not None:
                jobs.append(job)
                if job.attempt.id is None or job.recover_since is not None:
                    leased.append(recipient.id)
        for school_id, reserved in slots.items():
            accounts[school_id].next_send_at = reserved.next_free
        await session.flush()  # the rare ORM changes (and the accounts' next slots)
        # NEW: the lease and the new attempts, one statement each.
        new = [j for j in jobs if j.attempt.id is None]
        lease_until = now + timedelta(seconds=self.settings.worker_lease_seconds)
        if leased:
            await session.execute(
                LEASE,
                {
                    "status": LEASED.status.value,
                    "lease_until": lease_until,
                    "now": now,
                    "new": [j.recipient_id for j in new],
                    "ids": leased,
                },
            )
        if new:
            created = await session.execute(
                NEW_ATTEMPTS,
                {
                    "status": engine.SENDING,
                    "recipients": [j.recipient_id for j in new],
                    "providers": [j.attempt.provider for j in new],
                },
            )
            by_recipient = {j.recipient_id: j.attempt for j in new}
            for attempt_id, recipient_id, created_at, updated_at in created:
                attempt = by_recipient[recipient_id]
                attempt.id, attempt.created_at, attempt.updated_at = (
                    attempt_id,
                    created_at,
                    updated_at,
                )
        await engine._mark_taken(session, jobs)
        for campaign_id in expired:
            await campaigns.complete_if_done(session, campaign_id)
        return jobs


def lean_claim_one(
    self: engine.Engine,
    session: AsyncSession,
    now: datetime,
    recipient: Recipient,
    campaign: Campaign,
    school: School,
    accounts: dict[uuid.UUID, Any],
    latest: dict[int, Attempt],
    slots: dict[uuid.UUID, engine._Slots],
    expired: set[uuid.UUID],
) -> engine.Job | None:
    state = recipients.state_of(recipient)
    if campaign.status is not CampaignStatus.active or state.status not in rules.WAITING:
        recipient.next_attempt_at = None
        return None
    previous = latest.get(recipient.id)
    if state.status is rules.Status.scheduled and not policy.retry_allowed(school, recipient, now):
        last = engine._last_reason(previous, recipient.provider_error_code)
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
            reserved = slots[school.id] = engine._slots_for(account, now, self.settings)
        not_before = reserved.take()
        if not_before is None:
            return None
    change = rules.on_claim(state, campaign.status)
    assert change is not None and change.state == LEASED and not change.retry  # NEW
    # NEW: no recipients.apply / lease attribute writes here: lean_claim writes them.
    provider = self.registry.for_account(account)
    message = OutboundMessage(
        to=recipient.phone,
        body=recipients.render(campaign, recipient),
        status_callback=self.registry.callback_url(provider.name),
    )
    if previous is not None and previous.status in engine.UNRESOLVED:
        previous.updated_at = now
        return engine.Job(
            recipient.id,
            previous,
            provider,
            message,
            not_before,
            recover_since=previous.created_at,
            slots=reserved,
        )
    # NEW: a transient attempt, never added to the session; lean_claim inserts it.
    attempt = Attempt(recipient_id=recipient.id, provider=provider.name, status=engine.SENDING)
    return engine.Job(recipient.id, attempt, provider, message, not_before, slots=reserved)


class SplitPool:
    """Round-robin over several clients: what TwilioProvider/TelnyxProvider call."""

    def __init__(self, first: httpx.AsyncClient, count: int) -> None:
        self.clients = [first] + [
            httpx.AsyncClient(timeout=first.timeout) for _ in range(count - 1)
        ]
        self.turn = itertools.cycle(self.clients)

    async def post(self, *args: Any, **kwargs: Any) -> httpx.Response:
        return await next(self.turn).post(*args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> httpx.Response:
        return await next(self.turn).get(*args, **kwargs)


def install_split_pool(count: int = 5) -> None:
    init = Registry.__init__

    def split(self: Registry, http: httpx.AsyncClient, *args: Any, **kwargs: Any) -> None:
        init(self, SplitPool(http, count), *args, **kwargs)  # type: ignore[arg-type]

    Registry.__init__ = split  # type: ignore[method-assign]


_recording: dict[int, asyncio.Task[None]] = {}  # engine id: its record in flight


async def pipelined_run_once(self: engine.Engine, stopping: asyncio.Event | None = None) -> int:
    previous = _recording.pop(id(self), None)
    with metrics.claim_seconds.time():
        jobs = await self.claim()
    if not jobs:
        if previous is not None:
            await previous
        return 0
    outcomes = await self.send(jobs, stopping or asyncio.Event())
    if previous is not None:
        await previous
    _recording[id(self)] = asyncio.create_task(self.record(outcomes))
    return len(jobs)


def install_pipelined() -> None:
    engine.Engine.run_once = pipelined_run_once  # type: ignore[method-assign]
    close = DeliveryWorker.aclose

    async def aclose(worker: DeliveryWorker) -> None:
        """A stop waits for the record in flight."""
        pending = _recording.pop(id(worker.engine), None)
        if pending is not None:
            await pending
        await close(worker)

    DeliveryWorker.aclose = aclose  # type: ignore[method-assign, assignment]


_statements: dict[str, list[float]] = {}  # kind: [round trips, seconds]


def install_count() -> None:
    def kind_of(statement: str) -> str:
        words = statement.split()
        verb = words[0].upper() if words else "?"
        if verb == "SELECT" and "FROM" in words:
            table = words[words.index("FROM") + 1]
            return f"SELECT FROM {table}" + (" FOR UPDATE" if "FOR UPDATE" in statement else "")
        if verb in ("UPDATE", "DELETE") or verb == "INSERT":
            return " ".join(words[:3] if verb != "UPDATE" else words[:2])
        return " ".join(words[:4])

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        row = _statements.setdefault(kind_of(statement), [0, 0.0])
        row[0] += 1
        row[1] += time.perf_counter() - conn.info.pop("bench_started", time.perf_counter())

    def report() -> None:
        for kind, (count, seconds) in sorted(_statements.items(), key=lambda kv: -kv[1][0]):
            print(f"bench-statements: {count:.0f} {seconds:.3f} {kind}", file=sys.stderr)

    event.listen(SqlEngine, "before_cursor_execute", before)
    event.listen(SqlEngine, "after_cursor_execute", after)
    atexit.register(report)


def install(variants: list[str]) -> None:
    for variant in variants:
        if variant == "batched-record":
            engine.Engine.record = batched_record  # type: ignore[method-assign]
        elif variant == "pipelined":
            install_pipelined()
        elif variant == "lean-claim":
            engine.Engine.claim = lean_claim  # type: ignore[method-assign]
        elif variant == "split-pool":
            install_split_pool()
        elif variant == "count":
            install_count()
        elif variant != "stock":
            raise SystemExit(f"unknown variant {variant!r}")


def main(argv: list[str]) -> Any:
    install(argv[0].split(","))
    return cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

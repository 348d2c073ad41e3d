"""THE LOCK ORDER (`app.sending.locks`), writer by writer, on a real PostgreSQL: 1 the
campaign's send lock, 2 recipients' rows in id order, 3 opt-outs and provider accounts,
4 campaigns' rows in id order, last.

Each writer runs as the service runs it (an API call, a webhook, an engine step), on data
that makes it take every step it takes, and again for each step: a probe holds one
resource of that step (`lock_probes`), and once the writer waits for it, the writer must
hold every resource that comes before it in the order and none that comes after. Then the
probe lets go, and the writer must finish as it would have anyway.

Then the interleavings that broke it: a resend while the record completes the campaign,
and the opt-outs that took a step again (a provider's 21610 failing the number's waiting
recipients after the batch's, several numbers or schools one after the other).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.delivery import applier, inbox
from app.delivery.engine import Engine
from app.delivery.reconcile import Passed, Reconciler
from app.kit.db import Inbox, driver_url, unit_of_work
from app.providers.registry import Registry
from app.providers.twilio.events import parse_status_callback
from tests.delivery.committed import lock_probes as locks
from tests.delivery.committed.lock_probes import WAIT_SECONDS, Probes, settle
from tests.fakes.twilio import Answer
from tests.support.api import launched, make_school, people, recipients
from tests.support.database import admin_sql, alembic_config, with_database
from tests.support.delivery import (
    TimedFakeTwilio,
    TwilioSchool,
    by_phone,
    campaign_of,
    phone,
    set_twilio_account,
)
from tests.support.webhooks import TWILIO_INBOUND, TwilioAccount, inbound_form, post_twilio

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture(scope="module")
async def own_database_url(server_url: str) -> AsyncIterator[str]:
    """One database for the module's tests (a fresh one for each costs them a second):
    each test has a school of its own, and starts with nothing that earlier ones left due
    or waiting to be applied (`nothing_due`)."""
    name = f"campanile_locks_{uuid.uuid4().hex[:12]}"
    await admin_sql(server_url, f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
        yield url
    finally:
        await admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(autouse=True)
async def nothing_due(probes: Probes) -> None:
    """What the module's earlier tests left due (resent recipients) or not applied is not
    this test's: the engine's steps here claim and apply only what the test makes."""
    await probes.execute(
        "UPDATE recipients SET next_attempt_at = NULL WHERE next_attempt_at IS NOT NULL"
    )
    await probes.execute("UPDATE receipts SET applied_at = now() WHERE applied_at IS NULL")


@pytest.fixture
async def probes(own_database_url: str) -> AsyncIterator[Probes]:
    probes = Probes(driver_url(own_database_url))
    try:
        yield probes
        # Every lock of the test is gone with it: no advisory lock is left behind.
        left = await (await probes.look()).fetch(
            "SELECT * FROM pg_locks WHERE locktype = 'advisory' AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        assert [dict(lock) for lock in left] == []
    finally:
        await probes.aclose()


# -- the data --------------------------------------------------------------------------


async def launch(
    client: httpx.AsyncClient, school: TwilioSchool, *numbers: str, **extra: Any
) -> tuple[str, list[str]]:
    """A campaign launched to these numbers: its id, and its recipients' ids (in the
    numbers' order, which is their ids' order)."""
    campaign = await launched(client, school.auth, people(*numbers), **extra)
    ids = {r["phone"]: r["id"] for r in await recipients(client, school.auth, campaign["id"])}
    found = [ids[n] for n in numbers]
    assert sorted(found, key=int) == found
    return campaign["id"], found


async def status(client: httpx.AsyncClient, school: TwilioSchool, campaign_id: str) -> str:
    found: str = (await campaign_of(client, school.auth, campaign_id))["status"]
    return found


async def states(
    client: httpx.AsyncClient, school: TwilioSchool, campaign_id: str
) -> dict[str, tuple[str, str | None]]:
    """Each number's (status, failed reason) in the campaign."""
    return {
        number: (r["status"], r["failed_reason"] and r["failed_reason"]["code"])
        for number, r in (await by_phone(client, school.auth, campaign_id)).items()
    }


async def keep_receipt(
    probes: Probes, twilio: TimedFakeTwilio, number: str, status: str, code: str | None = None
) -> None:
    """A status callback for the message to `number`, kept as the webhook keeps it (the
    receipt applier applies it later)."""
    form = {"MessageSid": twilio.sid_to(number), "MessageStatus": status}
    if code is not None:
        form["ErrorCode"] = code
    connection = await probes.look()

    @asynccontextmanager
    async def acquire() -> AsyncIterator[asyncpg.Connection]:
        yield connection

    assert await inbox.keep(Inbox(acquire), parse_status_callback(form))


async def apply_stored(sessionmaker: Sessions) -> list[applier.Result]:
    """One batch of the receipt applier, in its transaction."""
    async with unit_of_work(sessionmaker) as session:
        return await applier.apply_stored(session)


def tomorrow() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).isoformat()


# -- close, archive --------------------------------------------------------------------


@pytest.mark.parametrize("action", ["close", "archive"])
async def test_close_and_archive_take_the_send_lock_the_recipients_the_account_then_the_campaign(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, probes: Probes, action: str
) -> None:
    """Three recipients waiting: a stop takes the campaign's send lock, the recipients (id
    order), tries the account (to forget its promised turns), then the campaign's row."""
    school = twilio_school
    stopped = {"close": "closed", "archive": "archived"}[action]
    promise = "UPDATE provider_accounts SET deferred_until = now() + interval '1 minute'"
    promised = "SELECT deferred_until IS NOT NULL FROM provider_accounts WHERE school_id = $1"

    async def launch_three(run: int) -> tuple[str, list[str]]:
        """Three recipients waiting, and their account's turns promised (as a claim over its
        rate promises them): close and archive forget those, step 3."""
        launched_ = await launch(client, school, *(phone(3 * run + i) for i in range(3)))
        await probes.execute(f"{promise} WHERE school_id = $1", uuid.UUID(school.id))
        return launched_

    def stop(campaign_id: str) -> Callable[[], Awaitable[httpx.Response]]:
        return lambda: client.post(f"/v1/campaigns/{campaign_id}/{action}", headers=school.auth)

    for run, step in enumerate((1, 2, 4)):
        campaign_id, ids = await launch_three(run)
        order = [
            locks.send_lock(campaign_id),
            *map(locks.recipient, ids),
            locks.account(school.id),
            locks.campaign(campaign_id),
        ]
        at = {1: order[0], 2: order[2], 4: order[-1]}[step]  # the middle recipient at 2
        response = await probes.check(order, at, stop(campaign_id))
        assert response.status_code == 200, response.text
        assert response.json()["status"] == stopped
        shown = await recipients(client, school.auth, campaign_id)
        assert [r["next_attempt_at"] for r in shown] == [None] * 3
        assert not await (await probes.look()).fetchval(promised, uuid.UUID(school.id))

    # Step 3 is only tried: an account locked elsewhere (a claim taking its send slots)
    # holds nothing up, and keeps its promised turns.
    campaign_id, _ = await launch_three(3)
    probe = await probes.hold(locks.account(school.id))
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            response = await stop(campaign_id)()
    finally:
        await probe.release()
    assert response.status_code == 200, response.text
    assert await (await probes.look()).fetchval(promised, uuid.UUID(school.id))


# -- staff and keyword opt-outs --------------------------------------------------------


@pytest.mark.parametrize("source", ["staff", "staff-on-contact", "keyword"])
async def test_opt_outs_take_the_send_locks_the_recipients_the_opt_out_then_the_campaigns(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    probes: Probes,
    source: str,
) -> None:
    """Four numbers wait in two campaigns: an opt-out of each takes both campaigns' send
    locks (key order), the number's recipient in each (id order) and its opt-out; the last
    one completes both campaigns, and takes their rows (id order). Each run waits for the
    last resource of one step, so that the first one of that step must be held already."""
    school = twilio_school
    # A number of its own, so that a STOP to it is for this school alone.
    account = TwilioAccount(twilio.account_sid, twilio.auth_token, "+15005550100")
    await set_twilio_account(client, school.auth, twilio, from_number=account.from_number)

    def opt_out(number: str, campaign_id: str, recipient_id: str) -> Awaitable[httpx.Response]:
        if source == "staff":
            return client.post("/v1/opt-outs", json={"phone": number}, headers=school.auth)
        if source == "staff-on-contact":
            path = f"/v1/campaigns/{campaign_id}/contacts/{recipient_id}/opt-out"
            return client.post(path, headers=school.auth)
        return post_twilio(
            client, TWILIO_INBOUND, inbound_form(account, number, "STOP"), twilio.auth_token
        )

    numbers = [phone(i) for i in range(4)]
    first, ones = await launch(client, school, *numbers)
    second, others = await launch(client, school, *numbers)
    for run, step in enumerate((1, 2, 3, 4)):
        number, one, other = numbers[run], ones[run], others[run]
        order: list[locks.Resource] = [
            *locks.send_locks(first, second),
            locks.recipient(one),
            locks.recipient(other),
            locks.opt_out(school.id, number),
            *(locks.campaigns(first, second) if step == 4 else []),  # the last: complete
        ]
        at = [r for r in order if r.step == step][-1]
        response = await probes.check(order, at, partial(opt_out, number, second, other))
        assert response.status_code == (200 if source == "keyword" else 201), response.text
        for campaign_id in (first, second):
            shown = await states(client, school, campaign_id)
            assert [shown[n] for n in numbers[: run + 1]] == [("failed", "opted_out")] * (run + 1)
            assert [shown[n] for n in numbers[run + 1 :]] == [("queued", None)] * (3 - run)
            assert await status(client, school, campaign_id) == (
                "complete" if step == 4 else "active"
            )
    listed = await client.get("/v1/opt-outs", headers=school.auth)
    assert [o["phone"] for o in listed.json()["items"]] == numbers


# -- the delivery engine: claim, record, receipt applier -------------------------------


async def test_the_claim_skips_locked_recipients_then_locks_the_account_then_the_campaign(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    probes: Probes,
) -> None:
    """A recipient whose retries ran out, the last of its campaign, on an account under a
    rate: the claim locks the recipient (2), the account (3), and the campaign's row as it
    completes (4)."""
    school = twilio_school
    await set_twilio_account(client, school.auth, twilio, max_messages_per_second=100)
    policy = {"base_delay_seconds": 60, "max_delay_seconds": 3600, "max_retry_age_seconds": 60}
    response = await client.patch("/v1/school", json={"retry_policy": policy}, headers=school.auth)
    assert response.status_code == 200, response.text

    async def expired(run: int) -> tuple[str, str, str]:
        """A campaign whose one recipient bounced (soft) and, time having passed, is due
        again with its retry age run out."""
        number = phone(run)
        twilio.script(number, Answer.throttled())
        campaign_id, [recipient_id] = await launch(client, school, number)
        assert await delivery.run_once() == 1
        assert await states(client, school, campaign_id) == {number: ("scheduled", "reattempting")}
        await probes.execute(
            "UPDATE recipients SET next_attempt_at = now(),"
            " first_attempt_at = now() - interval '61 seconds' WHERE id = $1",
            int(recipient_id),
        )
        return number, campaign_id, recipient_id

    for run, step in enumerate((3, 4)):
        number, campaign_id, recipient_id = await expired(run)
        order = [
            locks.recipient(recipient_id),
            locks.account(school.id),
            locks.campaign(campaign_id),
        ]
        assert await probes.check(order, order[step - 2], delivery.claim) == []
        assert await states(client, school, campaign_id) == {number: ("failed", "sending_error")}
        assert await status(client, school, campaign_id) == "complete"

    # Step 2 skips what is locked: the claim does not wait for it.
    number, campaign_id, recipient_id = await expired(2)
    probe = await probes.hold(locks.recipient(recipient_id))
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            assert await delivery.claim() == []
    finally:
        await probe.release()
    assert await states(client, school, campaign_id) == {number: ("scheduled", "reattempting")}
    assert await delivery.claim() == []
    assert await status(client, school, campaign_id) == "complete"


@pytest.mark.parametrize("writer", ["record", "applier"])
async def test_the_record_and_the_receipt_applier_lock_the_batch_the_opt_out_then_the_campaign(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    probes: Probes,
    writer: str,
) -> None:
    """Two recipients, the campaign's last: one number opted out at the provider (21610, at
    create or in a receipt), the other's message is final. The writer locks both (id
    order), records the opt-out, and completes the campaign."""
    school = twilio_school
    for run, step in enumerate((2, 3, 4)):
        opting, other = phone(2 * run), phone(2 * run + 1)
        write: Callable[[], Awaitable[Any]]
        expected: dict[str, tuple[str, str | None]]
        if writer == "record":
            twilio.script(opting, Answer.error(21610))
            twilio.script(other, Answer.error(30008))
            campaign_id, ids = await launch(client, school, opting, other)
            outcomes = await delivery.send(await delivery.claim(), asyncio.Event())
            assert len(outcomes) == 2
            write = partial(delivery.record, outcomes)
            expected = {opting: ("failed", "opted_out"), other: ("failed", "unknown")}
        else:
            campaign_id, ids = await launch(client, school, opting, other)
            assert await delivery.run_once() == 2
            await keep_receipt(probes, twilio, opting, "undelivered", "21610")
            await keep_receipt(probes, twilio, other, "delivered")
            write = partial(apply_stored, sessionmaker)
            expected = {opting: ("failed", "opted_out"), other: ("delivered", None)}
        order = [
            *map(locks.recipient, ids),
            locks.opt_out(school.id, opting),
            locks.campaign(campaign_id),
        ]
        result = await probes.check(order, order[step - 1], write)
        if writer == "applier":
            assert result == [applier.Result.applied] * 2
        assert await states(client, school, campaign_id) == expected
        assert await status(client, school, campaign_id) == "complete"
        listed = await client.get("/v1/opt-outs", headers=school.auth)
        assert [(o["phone"], o["source"]) for o in listed.json()["items"]] == [
            (phone(2 * r), "provider") for r in range(run + 1)
        ]


# -- the reconciliation ----------------------------------------------------------------


async def test_the_reconciliation_locks_the_recipients_then_the_campaign(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    settings: Settings,
    registry: Registry,
    probes: Probes,
) -> None:
    """Two messages `sent` and never confirmed, the campaign's last, past
    UNCONFIRMED_AFTER_SECONDS: the pass claims their attempts (no recipient locked), looks
    them up, then locks both recipients (id order) and completes the campaign (its row
    last). Its claim skips an attempt that is locked, and does not wait for it."""
    school = twilio_school
    short = settings.model_copy(
        update={"reconcile_after_seconds": 3600, "unconfirmed_after_seconds": 7200}
    )
    connection = await probes.look()

    @asynccontextmanager
    async def acquire() -> AsyncIterator[asyncpg.Connection]:
        yield connection

    sweeps = Reconciler(sessionmaker, short, registry, Inbox(acquire))
    overdue = """
        UPDATE attempts SET created_at = now() - interval '7201 seconds',
                            checked_at = now() - interval '7201 seconds'
        WHERE recipient_id = ANY($1::bigint[])
    """

    async def sent_long_ago(run: int) -> tuple[list[str], str, list[str]]:
        numbers = [phone(2 * run), phone(2 * run + 1)]
        campaign_id, ids = await launch(client, school, *numbers)
        assert await delivery.run_once() == 2
        for number in numbers:
            twilio.mark_sent(twilio.sid_to(number))
            await keep_receipt(probes, twilio, number, "sent")
        assert await apply_stored(sessionmaker) == [applier.Result.applied] * 2
        await probes.execute(overdue, [int(i) for i in ids])
        return numbers, campaign_id, ids

    for run, step in enumerate((2, 4)):
        numbers, campaign_id, ids = await sent_long_ago(run)
        order = [*map(locks.recipient, ids), locks.campaign(campaign_id)]
        at = order[1] if step == 2 else order[-1]
        passed = await probes.check(order, at, sweeps.sweep_once)
        assert passed == Passed(claimed=2, looked_up=2, unconfirmed=2)
        assert await states(client, school, campaign_id) == dict.fromkeys(
            numbers, ("delivered", None)
        )
        assert await status(client, school, campaign_id) == "complete"

    numbers, campaign_id, ids = await sent_long_ago(2)
    [attempt_id] = await connection.fetch(
        "SELECT max(id) AS id FROM attempts WHERE recipient_id = $1", int(ids[0])
    )
    probe = await probes.hold(locks.Row(2, "an attempt", "attempts", "id", attempt_id["id"]))
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            passed = await sweeps.sweep_once()
    finally:
        await probe.release()
    assert passed == Passed(claimed=1, looked_up=1, unconfirmed=1)
    assert await status(client, school, campaign_id) == "active"
    assert (await sweeps.sweep_once()).unconfirmed == 1
    assert await status(client, school, campaign_id) == "complete"


# -- resend ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["one", "all-failed"])
async def test_resend_locks_the_failed_recipients_then_the_campaign(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    probes: Probes,
    which: str,
) -> None:
    """Three recipients failed (resendable), the campaign complete: a resend locks the one
    (or all three, in id order), then the campaign's row, which it reopens."""
    school = twilio_school
    launches = []
    for run in range(2):
        numbers = [phone(3 * run + i) for i in range(3)]
        for number in numbers:
            twilio.script(number, Answer.error(30008))
        launches.append((numbers, *await launch(client, school, *numbers)))
    assert await delivery.run_once() == 6
    for step, (numbers, campaign_id, ids) in zip((2, 4), launches, strict=True):
        assert await status(client, school, campaign_id) == "complete"
        if which == "one":
            resent = [ids[1]]
            path = f"/v1/campaigns/{campaign_id}/contacts/{ids[1]}/resend"
        else:
            resent = ids
            path = f"/v1/campaigns/{campaign_id}/resend-failed"
        order = [*map(locks.recipient, resent), locks.campaign(campaign_id)]
        at = locks.recipient(ids[1]) if step == 2 else order[-1]

        response = await probes.check(order, at, partial(client.post, path, headers=school.auth))
        assert response.status_code == 202, response.text
        shown = await by_phone(client, school.auth, campaign_id)
        assert [shown[n]["status"] for n in numbers] == [
            "queued" if shown[n]["id"] in resent else "failed" for n in numbers
        ]
        assert await status(client, school, campaign_id) == "active"


# -- the issue: a resend while the record (or the applier) completes the campaign ------


class Deadlock(AssertionError):
    """PostgreSQL broke a circle of writers waiting for each other (`deadlock_timeout`)."""


def _is_deadlock(error: BaseException | None) -> bool:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, asyncpg.DeadlockDetectedError):
            return True
        error = error.__cause__ or error.__context__ or getattr(error, "orig", None)
    return False


async def results_of(*writers: asyncio.Future[Any]) -> list[Any]:
    """The writers' results (all done): a deadlock among them fails as one."""
    outcomes = [w.exception() or w.result() for w in writers]
    deadlocked = [o for o in outcomes if isinstance(o, BaseException) and _is_deadlock(o)]
    if deadlocked:
        raise Deadlock(f"a writer failed with {deadlocked[0]!r}")
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes


@pytest.mark.parametrize("completer", ["record", "applier"])
async def test_a_resend_while_the_record_completes_the_campaign_does_not_deadlock(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    probes: Probes,
    completer: str,
) -> None:
    """The issue: "resend locks the campaign row before the recipient while the record step
    holds recipients and then updates the campaign". The record (or the receipt applier)
    holds the recipient that staff resend, and only then completes the campaign; the resend
    comes in between. Taking the recipient before the campaign's row, the resend waits for
    the record, then reopens the campaign the record completed. (Taking the campaign's row
    first, it would wait for the recipient holding the row that the record then waits for:
    PostgreSQL would fail one of them after deadlock_timeout.)"""
    school = twilio_school
    resent, other = phone(0), phone(1)
    complete: Callable[[], Awaitable[Any]]
    final: tuple[str, str | None]
    if completer == "record":
        twilio.script(resent, Answer.error(30008))
        twilio.script(other, Answer.error(30008))
        campaign_id, [resent_id, other_id] = await launch(client, school, resent, other)
        outcomes = await delivery.send(await delivery.claim(), asyncio.Event())
        complete = partial(delivery.record, outcomes)
        final = ("failed", "unknown")
    else:
        campaign_id, [resent_id, other_id] = await launch(client, school, resent, other)
        assert await delivery.run_once() == 2
        await keep_receipt(probes, twilio, resent, "undelivered", "30008")
        await keep_receipt(probes, twilio, other, "delivered")
        complete = partial(apply_stored, sessionmaker)
        final = ("delivered", None)

    # The record holds `resent` (its batch, in id order) and waits for `other` (a probe's).
    probe = await probes.hold(locks.recipient(other_id))
    writers: list[asyncio.Future[Any]] = [asyncio.ensure_future(complete())]
    try:
        completer_pid = await probes.waiting_for(probe, writers[0])
        resend = f"/v1/campaigns/{campaign_id}/contacts/{resent_id}/resend"
        writers.append(asyncio.ensure_future(client.post(resend, headers=school.auth)))
        await probes.waiting(besides=[completer_pid])  # the resend waits, for the record
    finally:
        await probe.release()
        await settle(*writers)
    # Then the record completes the campaign, and the resend reopens it.
    _, response = await results_of(*writers)
    assert response.status_code == 202, response.text
    assert await states(client, school, campaign_id) == {resent: ("queued", None), other: final}
    assert await status(client, school, campaign_id) == "active"


# -- what breaks the order -------------------------------------------------------------
# A provider's opt-out (21610: at create in the record, in a receipt in the applier) is
# recorded through `app.opt_outs.service.opt_out`, once per number, after the writer has
# locked its batch; and a STOP goes through the same `opt_out` once per school it was sent
# to. Each call takes steps 2 to 4 (1 too, for a STOP) of its own.


@dataclass
class ProviderOptOut:
    """A number waiting in one campaign, and opted out at the provider in another."""

    waiting_campaign: str
    waiting: str  # its recipient id
    sent_campaign: str
    sent: str
    write: Callable[[], Awaitable[Any]]  # the writer that records the opt-out, not started


async def provider_opt_out(
    client: httpx.AsyncClient,
    school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    probes: Probes,
    writer: str,
    number: str,
) -> ProviderOptOut:
    """The number waits in a campaign that starts tomorrow (its recipient launched first,
    the lower id) and is sent to now in another, where the provider says it opted out: at
    create (the record) or in a receipt (the applier)."""
    waiting_campaign, [waiting] = await launch(client, school, number, send_at=tomorrow())
    sent_campaign, [sent] = await launch(client, school, number)
    write: Callable[[], Awaitable[Any]]
    if writer == "record":
        twilio.script(number, Answer.error(21610))
        outcomes = await delivery.send(await delivery.claim(), asyncio.Event())
        assert len(outcomes) == 1
        write = partial(delivery.record, outcomes)
    else:
        assert await delivery.run_once() == 1
        await keep_receipt(probes, twilio, number, "undelivered", "21610")
        write = partial(apply_stored, sessionmaker)
    return ProviderOptOut(waiting_campaign, waiting, sent_campaign, sent, write)


@pytest.mark.parametrize("writer", ["record", "applier"])
async def test_a_provider_opt_out_locks_the_number_s_waiting_recipients_in_id_order(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    probes: Probes,
    writer: str,
) -> None:
    number = phone(0)
    args = (client, twilio_school, twilio, delivery, sessionmaker, probes, writer, number)
    opted = await provider_opt_out(*args)
    order = [
        locks.recipient(opted.waiting),
        locks.recipient(opted.sent),
        locks.opt_out(twilio_school.id, number),
        locks.campaign(opted.sent_campaign),  # complete: its one recipient opted out
    ]
    await probes.check(order, order[0], opted.write)
    for campaign_id in (opted.waiting_campaign, opted.sent_campaign):
        assert await states(client, twilio_school, campaign_id) == {number: ("failed", "opted_out")}


async def test_a_stop_while_the_record_records_the_provider_s_opt_out_does_not_deadlock(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    probes: Probes,
) -> None:
    """The number replied STOP: Twilio refuses today's message (21610), and the STOP comes
    in while that refusal is recorded."""
    school = twilio_school
    account = TwilioAccount(twilio.account_sid, twilio.auth_token, "+15005550200")
    await set_twilio_account(client, school.auth, twilio, from_number=account.from_number)
    number = phone(0)
    args = (client, school, twilio, delivery, sessionmaker, probes, "record", number)
    opted = await provider_opt_out(*args)

    # The STOP takes the send locks and waits for the waiting recipient (a probe's); the
    # record locks its batch, then waits for the same recipient, after the STOP.
    probe = await probes.hold(locks.recipient(opted.waiting))
    form = inbound_form(account, number, "STOP")
    writers: list[asyncio.Future[Any]] = [
        asyncio.ensure_future(post_twilio(client, TWILIO_INBOUND, form, twilio.auth_token))
    ]
    try:
        stop_pid = await probes.waiting_for(probe, writers[0])
        writers.append(asyncio.ensure_future(opted.write()))
        await probes.waiting(besides=[stop_pid])
    finally:
        await probe.release()
        await settle(*writers)
    response, _ = await results_of(*writers)
    assert response.status_code == 200, response.text
    for campaign_id in (opted.waiting_campaign, opted.sent_campaign):
        assert await states(client, school, campaign_id) == {number: ("failed", "opted_out")}
    listed = await client.get("/v1/opt-outs", headers=school.auth)
    assert [o["phone"] for o in listed.json()["items"]] == [number]


async def test_a_batch_with_two_provider_opt_outs_takes_each_step_once(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    probes: Probes,
) -> None:
    """Two numbers opted out at the provider, in one batch of receipts; each also waits in
    a campaign launched since (of higher ids: the batch's come first in id order), as its
    last recipient. Waiting for the second number's recipient, and for its opt-out, the
    applier must not hold the first number's opt-out, nor the campaign it completed."""
    school = twilio_school
    for run in range(2):
        first, second = phone(2 * run), phone(2 * run + 1)
        campaign_id, batch = await launch(client, school, first, second)
        assert await delivery.run_once() == 2
        one, [waiting_first] = await launch(client, school, first)
        two, [waiting_second] = await launch(client, school, second)
        await keep_receipt(probes, twilio, first, "undelivered", "21610")
        await keep_receipt(probes, twilio, second, "undelivered", "21610")
        order = [
            *map(locks.recipient, (*batch, waiting_first, waiting_second)),
            locks.opt_out(school.id, first),
            locks.opt_out(school.id, second),
            *locks.campaigns(campaign_id, one, two),
        ]
        at = locks.recipient(waiting_second) if run == 0 else locks.opt_out(school.id, second)
        results = await probes.check(order, at, partial(apply_stored, sessionmaker))
        assert results == [applier.Result.applied] * 2
        for campaign in (campaign_id, one, two):
            assert await status(client, school, campaign) == "complete"


async def test_a_stop_to_a_number_that_two_schools_share_takes_each_step_once(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    probes: Probes,
) -> None:
    """Two schools send from one number of one Twilio account; a contact of both, the last
    recipient of a campaign in each, replies STOP: it opts out of each school. Waiting for
    the second school's send lock, recipient or opt-out, the STOP must not hold the first
    school's opt-out or completed campaign (nor its recipient, while waiting for a send
    lock)."""
    account = TwilioAccount(twilio.account_sid, twilio.auth_token, "+15005550300")
    body, auth = await make_school(client, name="Roosevelt Middle", sending_window=None)
    schools = sorted([twilio_school, TwilioSchool(body["id"], auth)], key=lambda s: uuid.UUID(s.id))
    for school in schools:
        await set_twilio_account(client, school.auth, twilio, from_number=account.from_number)
    for run in range(3):
        number = phone(run)
        [(first, [one]), (second, [other])] = [
            await launch(client, school, number) for school in schools
        ]
        order: list[locks.Resource] = [
            *locks.send_locks(first, second),
            locks.recipient(one),
            locks.recipient(other),
            *(locks.opt_out(school.id, number) for school in schools),
            *locks.campaigns(first, second),
        ]
        # The second school's (the schools are taken in id order).
        at = [locks.send_lock(second), order[3], order[5]][run]
        form = inbound_form(account, number, "STOP")
        stop = partial(post_twilio, client, TWILIO_INBOUND, form, twilio.auth_token)
        response = await probes.check(order, at, stop)
        assert response.status_code == 200, response.text
        for school, campaign in zip(schools, (first, second), strict=True):
            assert await status(client, school, campaign) == "complete"

"""Receipts that never come (README): the reconciliation looks a silent message up by its
id at the fake Twilio and applies what it finds as a receipt; a message still only `sent`
UNCONFIRMED_AFTER_SECONDS after its hand-over becomes delivered, unconfirmed, and its
campaign completes. Time passes in SQL only (the attempts' `checked_at` and `created_at`
moved back); the passes are driven directly."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.delivery.engine import Engine
from app.delivery.reconcile import Passed, Reconciler
from app.kit.db import unit_of_work
from app.models.attempt import UNSETTLED_STATUSES
from app.providers.registry import Registry
from app.sending import status as rules
from tests.fakes.twilio import Answer
from tests.support.api import apply_receipts, inbox_on, launched, make_school, people
from tests.support.delivery import (
    TimedFakeTwilio,
    TwilioSchool,
    by_phone,
    campaign_of,
    launch,
    phone,
    reason,
    receipt,
)

Sessions = async_sessionmaker[AsyncSession]
EVERY = 3600  # RECONCILE_AFTER_SECONDS in these tests
UNCONFIRMED = 7200  # UNCONFIRMED_AFTER_SECONDS


def reconciler(sessionmaker: Sessions, settings: Settings, registry: Registry) -> Reconciler:
    short = settings.model_copy(
        update={"reconcile_after_seconds": EVERY, "unconfirmed_after_seconds": UNCONFIRMED}
    )
    return Reconciler(sessionmaker, short, registry, inbox_on(sessionmaker))


async def age(sessionmaker: Sessions, campaign_id: str, *, handed_over_ago: float) -> None:
    """Time passes: the campaign's attempts were handed over `handed_over_ago` seconds ago
    and last checked then (at least RECONCILE_AFTER_SECONDS ago: due now)."""
    async with unit_of_work(sessionmaker) as session:
        await session.execute(
            text(
                "UPDATE attempts SET created_at = now() - make_interval(secs => :ago),"
                " checked_at = CASE WHEN checked_at IS NOT NULL"
                "   THEN now() - make_interval(secs => :ago) END"
                " WHERE recipient_id IN (SELECT id FROM recipients WHERE campaign_id = :c)"
            ),
            {"ago": handed_over_ago, "c": uuid.UUID(campaign_id)},
        )


def test_the_index_holds_the_statuses_the_rules_call_not_final() -> None:
    """`UNSETTLED_STATUSES` (the partial index's predicate) are the provider statuses of
    phases `queued` and `sent`: every message not final at its provider, and only those."""
    expected = {
        word
        for word, phase in rules.PROVIDER_PHASES.items()
        if phase in (rules.Phase.queued, rules.Phase.sent)
    }
    assert set(UNSETTLED_STATUSES) == expected


async def test_a_silent_message_is_looked_up_and_ends_as_twilio_says(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    settings: Settings,
    registry: Registry,
) -> None:
    """Three messages went out and said `sent`, then nothing: no callback ever came. Twilio
    knows better: one delivered, one undelivered (30003), one still sent. Looked up once
    RECONCILE_AFTER_SECONDS have passed, each becomes what Twilio says; not before."""
    school = twilio_school
    delivered, undelivered, silent = phone(0), phone(1), phone(2)
    campaign_id = await launch(client, school, delivered, undelivered, silent)
    assert await delivery.run_once() == 3
    for number in (delivered, undelivered, silent):
        twilio.mark_sent(twilio.sid_to(number))
        assert await receipt(sessionmaker, twilio.sid_to(number), "sent") == "applied"
    twilio.mark_sent(twilio.sid_to(delivered), "delivered")
    twilio.mark_sent(twilio.sid_to(undelivered), "undelivered", error_code=30003)
    sweeps = reconciler(sessionmaker, settings, registry)

    # Not yet due: nothing is asked.
    assert await sweeps.sweep_once() == Passed()
    assert twilio.fetches == []

    await age(sessionmaker, campaign_id, handed_over_ago=EVERY + 1)
    passed = await sweeps.sweep_once()
    assert passed == Passed(claimed=3, looked_up=3, cant_tell=0, kept=2, unconfirmed=0)
    await apply_receipts(sessionmaker)
    shown = await by_phone(client, school.auth, campaign_id)
    assert [shown[n]["status"] for n in (delivered, undelivered, silent)] == [
        "delivered",
        "failed",
        "pending",
    ]
    assert shown[delivered]["delivery_confirmed"] is True
    assert shown[undelivered]["failed_reason"] == reason("unreachable_number", "30003")
    assert sorted(twilio.fetches) == sorted(
        twilio.sid_to(n) for n in (delivered, undelivered, silent)
    )

    # Asked again only RECONCILE_AFTER_SECONDS later, and only the one still not final.
    assert await sweeps.sweep_once() == Passed()
    await age(sessionmaker, campaign_id, handed_over_ago=EVERY + 2)  # (checked then, too)
    twilio.fetches.clear()
    assert (await sweeps.sweep_once()).looked_up == 1
    assert twilio.fetches == [twilio.sid_to(silent)]
    assert (await campaign_of(client, school.auth, campaign_id))["status"] == "active"


async def test_cant_tell_changes_nothing_and_asks_again_later(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    settings: Settings,
    registry: Registry,
) -> None:
    school = twilio_school
    number = phone(0)
    campaign_id = await launch(client, school, number)
    assert await delivery.run_once() == 1
    twilio.mark_sent(twilio.sid_to(number), "delivered")
    await age(sessionmaker, campaign_id, handed_over_ago=EVERY + 1)
    twilio.script_fetch(Answer.server_error(503))
    sweeps = reconciler(sessionmaker, settings, registry)
    assert await sweeps.sweep_once() == Passed(claimed=1, looked_up=1, cant_tell=1)
    assert await apply_receipts(sessionmaker) == []
    assert (await by_phone(client, school.auth, campaign_id))[number]["status"] == "queued"
    await age(sessionmaker, campaign_id, handed_over_ago=2 * EVERY + 1)
    assert await sweeps.sweep_once() == Passed(claimed=1, looked_up=1, kept=1)
    await apply_receipts(sessionmaker)
    assert (await by_phone(client, school.auth, campaign_id))[number]["status"] == "delivered"
    assert (await campaign_of(client, school.auth, campaign_id))["status"] == "complete"


async def test_still_sent_at_the_end_is_delivered_unconfirmed_and_the_campaign_completes(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    settings: Settings,
    registry: Registry,
) -> None:
    """Two messages the carrier accepted and never confirmed: one whose `sent` callback
    came (Pending), one whose every callback was lost (Still in Queue; Twilio says `sent`).
    UNCONFIRMED_AFTER_SECONDS after the hand-over both are Delivered, unconfirmed, and the
    campaign is complete; a confirmation that comes after all makes it confirmed."""
    school = twilio_school
    pending, lost = phone(0), phone(1)
    campaign_id = await launch(client, school, pending, lost)
    assert await delivery.run_once() == 2
    for number in (pending, lost):
        twilio.mark_sent(twilio.sid_to(number))
    assert await receipt(sessionmaker, twilio.sid_to(pending), "sent") == "applied"
    shown = await by_phone(client, school.auth, campaign_id)
    assert [shown[n]["status"] for n in (pending, lost)] == ["pending", "queued"]
    sweeps = reconciler(sessionmaker, settings, registry)

    await age(sessionmaker, campaign_id, handed_over_ago=UNCONFIRMED + 1)
    passed = await sweeps.sweep_once()
    assert passed == Passed(claimed=2, looked_up=2, kept=1, unconfirmed=2)
    await apply_receipts(sessionmaker)  # the lost `sent`, found: stale by now
    shown = await by_phone(client, school.auth, campaign_id)
    assert [(shown[n]["status"], shown[n]["delivery_confirmed"]) for n in (pending, lost)] == [
        ("delivered", False),
        ("delivered", False),
    ]
    assert (await campaign_of(client, school.auth, campaign_id))["status"] == "complete"

    # Done with them: never asked again.
    await age(sessionmaker, campaign_id, handed_over_ago=UNCONFIRMED + EVERY + 1)
    twilio.fetches.clear()
    assert await sweeps.sweep_once() == Passed()
    assert twilio.fetches == []
    # The carrier's confirmation, late: confirmed.
    assert await receipt(sessionmaker, twilio.sid_to(pending), "delivered") == "applied"
    shown = await by_phone(client, school.auth, campaign_id)
    assert shown[pending]["delivery_confirmed"] is True


async def test_a_message_still_queued_at_the_end_is_not_taken_as_delivered(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    settings: Settings,
    registry: Registry,
) -> None:
    """The carrier never accepted it: no overdue rule; it is asked about again later."""
    school = twilio_school
    number = phone(0)
    campaign_id = await launch(client, school, number)
    assert await delivery.run_once() == 1
    await age(sessionmaker, campaign_id, handed_over_ago=UNCONFIRMED + 1)
    sweeps = reconciler(sessionmaker, settings, registry)
    assert await sweeps.sweep_once() == Passed(claimed=1, looked_up=1)
    assert (await by_phone(client, school.auth, campaign_id))[number]["status"] == "queued"
    await age(sessionmaker, campaign_id, handed_over_ago=UNCONFIRMED + EVERY + 1)
    assert (await sweeps.sweep_once()).looked_up == 1
    assert (await campaign_of(client, school.auth, campaign_id))["status"] == "active"


async def test_an_archived_campaign_s_messages_are_let_go(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    settings: Settings,
    registry: Registry,
) -> None:
    """Archived: statuses frozen (Pending stays Pending); nothing is looked up."""
    school = twilio_school
    number = phone(0)
    campaign_id = await launch(client, school, number)
    assert await delivery.run_once() == 1
    assert await receipt(sessionmaker, twilio.sid_to(number), "sent") == "applied"
    response = await client.post(f"/v1/campaigns/{campaign_id}/archive", headers=school.auth)
    assert response.status_code == 200, response.text
    await age(sessionmaker, campaign_id, handed_over_ago=UNCONFIRMED + 1)
    sweeps = reconciler(sessionmaker, settings, registry)
    assert await sweeps.sweep_once() == Passed(claimed=1)
    assert twilio.fetches == []
    assert (await by_phone(client, school.auth, campaign_id))[number]["status"] == "pending"
    await age(sessionmaker, campaign_id, handed_over_ago=UNCONFIRMED + 1)
    assert await sweeps.sweep_once() == Passed()  # let go: out of the index


async def test_the_simulator_answers_from_what_it_sent(
    client: httpx.AsyncClient,
    sessionmaker: Sessions,
    settings: Settings,
    registry: Registry,
    delivery: Engine,
) -> None:
    """A simulator school's `...08` number: `sent`, then nothing, for good. At the end, it
    is delivered, unconfirmed (the simulator said `sent` when asked)."""
    _, auth = await make_school(client, name="Simulated", sending_window=None)
    number = "+14155550108"
    campaign = await launched(client, auth, people(number))
    assert await delivery.run_once() == 1
    await registry.simulator.drain()
    shown = await by_phone(client, auth, campaign["id"])
    assert shown[number]["status"] == "pending"
    await age(sessionmaker, campaign["id"], handed_over_ago=UNCONFIRMED + 1)
    sweeps = reconciler(sessionmaker, settings, registry)
    assert await sweeps.sweep_once() == Passed(claimed=1, looked_up=1, unconfirmed=1)
    shown = await by_phone(client, auth, campaign["id"])
    assert (shown[number]["status"], shown[number]["delivery_confirmed"]) == ("delivered", False)

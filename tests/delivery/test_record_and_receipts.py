"""The record and the receipts that follow it, end to end through the real Engine, the
receipt applier and the fake Twilio on loopback: a receipt before its send is recorded, a
late one for an earlier attempt, and the completion rule.
"""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select

from app.delivery.engine import Engine
from app.models import StoredReceipt
from tests.fakes.twilio import Answer
from tests.support.api import apply_receipts
from tests.support.delivery import (
    Sessions,
    TimedFakeTwilio,
    TwilioSchool,
    campaign_of,
    launch,
    make_due,
    one,
    phone,
    receipt,
)


async def test_receipt_before_the_send_is_recorded_waits_then_applies(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    auth = twilio_school.auth
    number = phone(0)
    cid = await launch(client, twilio_school, number)

    # The engine's three steps, with Twilio's callbacks arriving between send and record.
    jobs = await delivery.claim()
    outcomes = await delivery.send(jobs, asyncio.Event())
    [handover] = outcomes
    assert handover.result is not None
    sid = handover.result.provider_message_id
    assert sid is not None and sid == twilio.sid_to(number)

    assert await receipt(sessionmaker, sid, "sent") == "waiting"
    assert await receipt(sessionmaker, sid, "delivered") == "waiting"
    assert await receipt(sessionmaker, sid, "delivered") == "duplicate"
    recipient = await one(client, auth, cid, number)
    assert recipient["status"] == "queued"
    assert recipient["attempts_history"] == []  # written when the send is recorded

    await delivery.record(outcomes)
    recipient = await one(client, auth, cid, number)
    assert recipient["status"] == "queued"  # the receipts are applied after the record
    assert [r.value for r in await apply_receipts(sessionmaker)] == ["applied", "applied"]

    recipient = await one(client, auth, cid, number)
    assert (recipient["status"], recipient["next_attempt_at"]) == ("delivered", None)
    [attempt] = recipient["attempts_history"]
    assert (attempt["provider_message_id"], attempt["status"]) == (sid, "delivered")
    async with sessionmaker() as session:
        stored = (
            await session.execute(
                select(StoredReceipt).where(StoredReceipt.provider_message_id == sid)
            )
        ).scalars()
        assert all(r.applied_at is not None for r in stored)
    assert (await campaign_of(client, auth, cid))["status"] == "complete"


async def test_late_delivered_for_an_earlier_attempt_wins_and_cancels_the_retry(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    auth = twilio_school.auth
    number = phone(0)
    cid = await launch(client, twilio_school, number)
    assert await delivery.run_once() == 1
    first = twilio.sid_to(number)
    # Twilio reports a soft failure (carrier congestion) for the first message...
    assert await receipt(sessionmaker, first, "undelivered", "30017") == "applied"
    assert (await one(client, auth, cid, number))["status"] == "scheduled"
    # ...the retry is throttled and scheduled again...
    twilio.script(number, Answer.throttled())
    await make_due(sessionmaker, cid)
    assert await delivery.run_once() == 1
    recipient = await one(client, auth, cid, number)
    assert (recipient["status"], recipient["attempts"]) == ("scheduled", 2)
    assert recipient["next_attempt_at"] is not None

    # ...then the first message turns out delivered after all.
    assert await receipt(sessionmaker, first, "delivered") == "applied"

    recipient = await one(client, auth, cid, number)
    assert recipient["status"] == "delivered"
    assert recipient["failed_reason"] is None
    assert recipient["next_attempt_at"] is None
    assert await delivery.run_once() == 0
    assert twilio.sends_to(number) == 2
    assert (await campaign_of(client, auth, cid))["status"] == "complete"


async def test_campaign_completes_when_every_recipient_is_final(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    auth = twilio_school.auth
    delivered, invalid, throttled = phone(0), phone(1), phone(2)
    twilio.script(invalid, Answer.error(21211))
    twilio.script(throttled, Answer.throttled())
    cid = await launch(client, twilio_school, delivered, invalid, throttled)

    assert await delivery.run_once() == 3
    assert await receipt(sessionmaker, twilio.sid_to(delivered), "delivered") == "applied"
    campaign = await campaign_of(client, auth, cid)
    assert campaign["status"] == "active"
    assert campaign["completed_at"] is None

    await make_due(sessionmaker, cid)
    assert await delivery.run_once() == 1
    assert (await campaign_of(client, auth, cid))["status"] == "active"
    assert await receipt(sessionmaker, twilio.sid_to(throttled), "delivered") == "applied"

    campaign = await campaign_of(client, auth, cid)
    assert campaign["status"] == "complete"
    assert campaign["completed_at"] is not None
    assert campaign["counts"]["delivered"] == 2
    assert campaign["counts"]["failed"] == 1

    # A campaign whose every send fails hard completes in the engine's own record step.
    twilio.script(phone(3), Answer.error(21614))
    other = await launch(client, twilio_school, phone(3))
    assert await delivery.run_once() == 1
    assert (await campaign_of(client, auth, other))["status"] == "complete"

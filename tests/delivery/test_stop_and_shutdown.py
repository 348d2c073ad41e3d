"""Close, archive and a worker's stop: retries end at once, claimed recipients not yet sent
are released, and those of a campaign closed meanwhile stay stopped. The real Engine
against the fake Twilio on loopback.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy import update

from app.delivery.engine import Engine
from app.kit.db import unit_of_work
from app.models import Recipient
from tests.fakes.twilio import Answer
from tests.support.delivery import (
    Sessions,
    TimedFakeTwilio,
    TwilioSchool,
    at,
    by_phone,
    campaign_of,
    launch,
    make_due,
    now,
    one,
    phone,
    receipt,
)


@pytest.mark.parametrize("action", ["close", "archive"])
async def test_close_and_archive_stop_retries_at_once(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    action: str,
) -> None:
    auth = twilio_school.auth
    retrying, handed = phone(0), phone(1)
    twilio.script(retrying, Answer.throttled())
    cid = await launch(client, twilio_school, retrying, handed)
    assert await delivery.run_once() == 2
    sid = twilio.sid_to(handed)

    response = await client.post(f"/v1/campaigns/{cid}/{action}", headers=auth)
    assert response.status_code == 200, response.text

    seen = await by_phone(client, auth, cid)
    assert seen[retrying]["status"] == "scheduled"  # statuses are kept...
    assert seen[retrying]["failed_reason"]["code"] == "reattempting"
    assert seen[handed]["status"] == "queued"
    assert seen[retrying]["next_attempt_at"] is None  # ...and nothing is due any more
    assert await delivery.run_once() == 0
    # Even a row made due behind the API's back is not sent for a stopped campaign.
    async with unit_of_work(sessionmaker) as session:
        await session.execute(
            update(Recipient)
            .where(Recipient.campaign_id == uuid.UUID(cid), Recipient.phone == retrying)
            .values(next_attempt_at=now())
        )
    assert await delivery.run_once() == 0
    assert len(twilio.requests) == 2
    recipient = await one(client, auth, cid, retrying)
    assert (recipient["status"], recipient["next_attempt_at"]) == ("scheduled", None)

    # Receipts for the message already handed over: applied when closed, only kept in the
    # history when archived.
    assert await receipt(sessionmaker, sid, "delivered") == "applied"
    recipient = await one(client, auth, cid, handed)
    assert recipient["attempts_history"][0]["status"] == "delivered"
    assert recipient["status"] == ("delivered" if action == "close" else "queued")
    assert (await campaign_of(client, auth, cid))["status"] == (
        "closed" if action == "close" else "archived"
    )


async def test_stop_before_sending_releases_the_claimed_recipients(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    auth = twilio_school.auth
    retry = phone(9)
    twilio.script(retry, Answer.throttled())
    earlier = await launch(client, twilio_school, retry)
    assert await delivery.run_once() == 1
    await make_due(sessionmaker, earlier)
    fresh = await launch(client, twilio_school, phone(0), phone(1))

    stopping = asyncio.Event()
    stopping.set()
    assert await delivery.run_once(stopping) == 3

    assert len(twilio.requests) == 1  # only the earlier throttled one
    released_at = now()
    for cid, number, attempts in ((fresh, phone(0), 0), (fresh, phone(1), 0), (earlier, retry, 1)):
        recipient = await one(client, auth, cid, number)
        assert recipient["status_group"] == "in_progress"
        assert recipient["attempts"] == attempts
        assert len(recipient["attempts_history"]) == attempts  # no attempt left behind
        assert at(recipient["next_attempt_at"]) <= released_at  # due again at once

    # The next worker sends them.
    assert await delivery.run_once() == 3
    assert len(twilio.requests) == 4
    recipient = await one(client, auth, earlier, retry)
    assert (recipient["status"], recipient["attempts"]) == ("queued", 2)


async def test_released_recipients_of_a_campaign_closed_meanwhile_stay_stopped(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    auth = twilio_school.auth
    number = phone(0)
    cid = await launch(client, twilio_school, number)
    jobs = await delivery.claim()
    response = await client.post(f"/v1/campaigns/{cid}/close", headers=auth)
    assert response.status_code == 200, response.text

    stopping = asyncio.Event()
    stopping.set()
    await delivery.record(await delivery.send(jobs, stopping))

    recipient = await one(client, auth, cid, number)
    assert (recipient["status"], recipient["attempts"]) == ("queued", 0)
    assert recipient["next_attempt_at"] is None  # closed: nothing is due again
    assert await delivery.run_once() == 0
    assert twilio.requests == []

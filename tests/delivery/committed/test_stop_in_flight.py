"""Staff stop messages that a worker has already claimed: no attempt starts once the call
returns (README, Delivery), even for a batch whose sends are still waiting for their turn.

The school's sender allows 3 messages a second, so a batch of three is sent at about 0 s,
0.33 s and 0.67 s; staff act as soon as the first is out, while the engine is mid-batch."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest

from app.delivery.engine import Engine
from app.kit.db import driver_url
from tests.fakes.twilio import Answer
from tests.support.api import launched, people, recipients
from tests.support.delivery import TimedFakeTwilio, TwilioSchool, set_twilio_account

NUMBERS = ["+12015550100", "+12015550101", "+12015550102"]


async def first_create(twilio: TimedFakeTwilio) -> None:
    for _ in range(500):
        if twilio.creates:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no message went out")


@pytest.mark.parametrize("action", ["close", "archive"])
async def test_closing_or_archiving_mid_batch_stops_the_sends_not_yet_started(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    action: str,
) -> None:
    auth = twilio_school.auth
    campaign_id = ""

    async def stop() -> httpx.Response:
        return await client.post(f"/v1/campaigns/{campaign_id}/{action}", headers=auth)

    await set_twilio_account(client, auth, twilio, max_messages_per_second=3)
    campaign = await launched(client, auth, people(*NUMBERS))
    campaign_id = campaign["id"]
    cycle = asyncio.create_task(delivery.run_once())
    await first_create(twilio)
    assert (await stop()).status_code == 200
    stopped = time.monotonic()
    assert await cycle == 3  # all three were claimed before staff acted

    # Only the first went out, before the call returned.
    [(arrived, sent)] = twilio.creates
    assert arrived < stopped
    # The other two keep their status (README, Delivery), with no attempt made and nothing due.
    rows = {r["phone"]: r for r in await recipients(client, auth, campaign_id)}
    assert rows.pop(sent)["attempts"] == 1
    assert [(r["status"], r["attempts"], r["next_attempt_at"]) for r in rows.values()] == [
        ("queued", 0, None)
    ] * 2
    assert await delivery.run_once() == 0
    assert len(twilio.creates) == 1


async def test_an_opt_out_mid_batch_stops_that_number_s_send(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    auth = twilio_school.auth
    await set_twilio_account(client, auth, twilio, max_messages_per_second=3)
    campaign = await launched(client, auth, people(*NUMBERS))
    cycle = asyncio.create_task(delivery.run_once())
    await first_create(twilio)
    # One of the two not sent yet.
    opting_out = next(n for n in NUMBERS if n not in {to for _, to in twilio.creates})
    response = await client.post("/v1/opt-outs", json={"phone": opting_out}, headers=auth)
    assert response.status_code == 201, response.text
    assert await cycle == 3

    # The number that opted out gets nothing; the others go out as planned.
    assert sorted(to or "" for _, to in twilio.creates) == sorted(set(NUMBERS) - {opting_out})
    rows = {r["phone"]: r for r in await recipients(client, auth, campaign["id"])}
    opted_out = rows.pop(opting_out)
    assert opted_out["status"] == "failed"
    assert opted_out["failed_reason"]["code"] == "opted_out"
    assert opted_out["attempts"] == 0
    assert [r["attempts"] for r in rows.values()] == [1, 1]


async def test_a_close_returns_once_the_send_in_flight_is_answered(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    """The provider takes half a second to answer: a close that comes meanwhile answers
    after it, so when staff see the campaign closed, nothing of it is still being sent."""
    auth = twilio_school.auth
    twilio.script(NUMBERS[0], Answer.slow(0.5))
    campaign = await launched(client, auth, people(NUMBERS[0]))
    cycle = asyncio.create_task(delivery.run_once())
    await first_create(twilio)
    [(arrived, _)] = twilio.creates

    response = await client.post(f"/v1/campaigns/{campaign['id']}/close", headers=auth)
    assert response.status_code == 200, response.text
    assert time.monotonic() - arrived >= 0.5 - 0.05
    assert await cycle == 1
    [shown] = await recipients(client, auth, campaign["id"])
    assert (shown["status"], shown["attempts"]) == ("queued", 1)
    await answered(twilio)


async def test_a_send_step_cancelled_mid_batch_leaves_no_lock_behind(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    own_database_url: str,
) -> None:
    """Whatever stops a batch half-way, a later close is not held up by it."""
    auth = twilio_school.auth
    for number in NUMBERS:
        twilio.script(number, Answer.slow(2.0))
    campaign = await launched(client, auth, people(*NUMBERS))
    jobs = await delivery.claim()
    sending = asyncio.create_task(delivery.send(jobs, asyncio.Event()))
    await first_create(twilio)
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending

    admin = await asyncpg.connect(driver_url(own_database_url))
    try:
        held = await admin.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    finally:
        await admin.close()
    assert held == 0
    async with asyncio.timeout(2):
        response = await client.post(f"/v1/campaigns/{campaign['id']}/close", headers=auth)
    assert response.status_code == 200, response.text
    await answered(twilio)  # the fake's own slow answers end within this test


async def answered(twilio: TimedFakeTwilio) -> None:
    """Wait until the fake has made every message it was asked for."""
    for _ in range(500):
        if len(twilio.messages) >= len(twilio.creates):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the fake did not answer")


async def test_a_close_is_not_held_up_by_sends_that_keep_overlapping(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    """Two sends in flight at all times, answers staggered: a close asked meanwhile goes
    ahead once those two are answered, and no other send of the campaign starts."""
    auth = twilio_school.auth
    engine = Engine(
        delivery.sessionmaker,
        delivery.settings.model_copy(update={"worker_concurrency": 2}),
        delivery.registry,
    )
    numbers = [f"+1201555020{i}" for i in range(8)]
    for i, number in enumerate(numbers):
        twilio.script(number, Answer.slow(0.3 + 0.1 * i))
    campaign = await launched(client, auth, people(*numbers))
    cycle = asyncio.create_task(engine.run_once())
    for _ in range(500):
        if len(twilio.creates) >= 2:
            break
        await asyncio.sleep(0.01)
    asked = time.monotonic()
    response = await client.post(f"/v1/campaigns/{campaign['id']}/close", headers=auth)
    assert response.status_code == 200, response.text
    assert await cycle == len(numbers)

    assert len(twilio.creates) == 2
    assert all(arrived < asked for arrived, _ in twilio.creates)
    rows = await recipients(client, auth, campaign["id"])
    assert sorted(r["attempts"] for r in rows) == [0] * 6 + [1, 1]
    await answered(twilio)

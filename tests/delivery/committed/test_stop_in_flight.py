"""Staff stop messages that a worker has already claimed: no attempt starts once the call
returns (README, Delivery), even for a batch whose sends are still waiting for their turn.

The school's sender allows 3 messages a second, so a batch of three is sent at about 0 s,
0.33 s and 0.67 s; staff act as soon as the first is out, while the engine is mid-batch.

How many sends start before a stop returns depends on how fast the machine is: a send
admitted before the stop takes its campaign's lock may go out, and the stop waits for its
answer. So these tests check the rule, not a schedule: whatever started before the call
returned is recorded as sent, and nothing of what it stopped starts after it returned."""

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
from tests.support.delivery import TimedFakeTwilio, TwilioSchool, one, set_twilio_account

NUMBERS = ["+12015550100", "+12015550101", "+12015550102"]
# The advisory locks in the test's own database (pg_locks shows the whole server's: other
# test runs on the same server hold theirs).
ADVISORY_LOCKS = """
    SELECT count(*) FROM pg_locks
    WHERE locktype = 'advisory'
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


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

    # No send started after the call returned. How many had started before it depends on
    # the machine: at least the first; on a slow one, maybe all three.
    assert all(arrived < stopped for arrived, _ in twilio.creates), (stopped, twilio.creates)
    sent = {to or "" for _, to in twilio.creates}
    assert len(sent) == len(twilio.creates) >= 1  # one create each at most
    await assert_sent_or_untouched(client, auth, twilio, campaign_id, sent)
    assert await delivery.run_once() == 0
    assert len(twilio.creates) == len(sent)


async def assert_sent_or_untouched(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    twilio: TimedFakeTwilio,
    campaign_id: str,
    sent: set[str],
) -> None:
    """The recipients sent are recorded as sent, each with its message's id; the others
    keep their status (README, Delivery), with no attempt made and nothing due."""
    assert sorted(r["phone"] for r in await recipients(client, auth, campaign_id)) == NUMBERS
    for number in NUMBERS:
        row = await one(client, auth, campaign_id, number)
        shown = (row["status"], row["attempts"], row["next_attempt_at"])
        history = [a["provider_message_id"] for a in row["attempts_history"]]
        if number in sent:
            assert (shown, history) == (("queued", 1, None), [twilio.sid_to(number)]), number
        else:
            assert (shown, history) == (("queued", 0, None), []), number


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
    # One of the two not sent yet (on a slow machine, it may start before the opt-out
    # returns).
    opting_out = next(n for n in NUMBERS if n not in {to for _, to in twilio.creates})
    response = await client.post("/v1/opt-outs", json={"phone": opting_out}, headers=auth)
    assert response.status_code == 201, response.text
    stopped = time.monotonic()
    assert await cycle == 3

    # The number that opted out gets nothing after the opt-out returned (a send to it that
    # had started before may have gone out: then it is recorded); the others go out as
    # planned.
    assert sorted(to or "" for _, to in twilio.creates if to != opting_out) == sorted(
        set(NUMBERS) - {opting_out}
    )
    to_opted_out = [arrived for arrived, to in twilio.creates if to == opting_out]
    assert all(arrived < stopped for arrived in to_opted_out), (stopped, to_opted_out)
    rows = {r["phone"]: r for r in await recipients(client, auth, campaign["id"])}
    del rows[opting_out]
    opted_out = await one(client, auth, campaign["id"], opting_out)
    assert opted_out["status"] == "failed"
    assert opted_out["failed_reason"]["code"] == "opted_out"
    assert opted_out["next_attempt_at"] is None
    history = [a["provider_message_id"] for a in opted_out["attempts_history"]]
    if to_opted_out:
        assert (opted_out["attempts"], history) == (1, [twilio.sid_to(opting_out)])
    else:
        assert (opted_out["attempts"], history) == (0, [])
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
        held = await admin.fetchval(ADVISORY_LOCKS)
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
    own_database_url: str,
) -> None:
    """Two sends in flight at all times, answers staggered: once a close waits for the
    campaign's lock, no other send of it starts (the close goes ahead once those in flight
    are answered, rather than once the batch has run out), and none starts after the
    close returned."""
    auth = twilio_school.auth
    concurrency = 2
    # No send steps aside as a straggler here (app.delivery.gate: after
    # WORKER_STRAGGLING_SECONDS, 0.5 s by default, one frees its place for another): at
    # most `concurrency` are under way at once, which the bound below counts on. (On a slow
    # machine, answers of 0.6 s and more made four creates unanswered at once.)
    settings = {"worker_concurrency": concurrency, "worker_straggling_seconds": 30.0}
    engine = Engine(
        delivery.sessionmaker, delivery.settings.model_copy(update=settings), delivery.registry
    )
    # Answers staggered over 0.3-1 s, two at a time: the batch takes over 4 s to go out,
    # so the close comes while it does, even on a slow machine.
    numbers = [f"+1201555{200 + i:04d}" for i in range(16)]
    for i, number in enumerate(numbers):
        twilio.script(number, Answer.slow(0.3 + 0.1 * (i % 8)))
    campaign = await launched(client, auth, people(*numbers))
    cycle = asyncio.create_task(engine.run_once())
    for _ in range(500):
        if len(twilio.creates) >= 2:
            break
        await asyncio.sleep(0.01)

    closing = asyncio.create_task(
        client.post(f"/v1/campaigns/{campaign['id']}/close", headers=auth)
    )
    # Seen once the close waits for the lock: (creates arrived, messages made) at the fake.
    seen_waiting: tuple[int, int] | None = None
    admin = await asyncpg.connect(driver_url(own_database_url))
    try:
        while not closing.done():
            if await admin.fetchval(f"{ADVISORY_LOCKS} AND NOT granted"):
                seen_waiting = len(twilio.creates), len(twilio.messages)
                break
            await asyncio.sleep(0.005)
    finally:
        await admin.close()
    response = await closing
    stopped = time.monotonic()
    assert response.status_code == 200, response.text
    assert await cycle == len(numbers)

    if seen_waiting is not None:  # (it waits, unless it came as nothing was in flight)
        # At most `concurrency` sends are under way (admitted, not yet answered) at once,
        # and once the close waits, every admission is refused. So the creates still to
        # come are of sends admitted before, not yet at the fake: at most the turns not
        # taken by a create the fake had not answered. (Typically none: the two in flight
        # take both.)
        at_fake, answered_then = seen_waiting
        in_transit = concurrency - (at_fake - answered_then)
        assert len(twilio.creates) - at_fake <= in_transit, (seen_waiting, twilio.creates)
    # No send started after the close returned. How many started before it depends on the
    # machine: at least the two in flight when it was asked.
    assert all(arrived < stopped for arrived, _ in twilio.creates), (stopped, twilio.creates)
    sent = {to for _, to in twilio.creates}
    assert 2 <= len(sent) == len(twilio.creates)
    attempts = {r["phone"]: r["attempts"] for r in await recipients(client, auth, campaign["id"])}
    assert attempts == {number: int(number in sent) for number in numbers}
    await answered(twilio)

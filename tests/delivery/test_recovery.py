"""Recovery: a hand-over that may have gone out (a lost answer, a worker that died or
outlived its lease) is asked about before anything is sent again, and never records
another attempt's message. The real Engine against the fake Twilio on loopback.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest

from app.config import Settings
from app.delivery.engine import Engine, Handover
from app.kit.crypto import SecretBox
from app.providers.base import Receipt
from app.providers.registry import Registry
from tests.fakes.twilio import Answer
from tests.support.delivery import (
    Sessions,
    TimedFakeTwilio,
    TwilioSchool,
    campaign_of,
    launch,
    make_due,
    now,
    one,
    phone,
    reason,
    receipt,
)


@pytest.mark.parametrize("created", [True, False], ids=["went-through", "lost"])
async def test_server_error_asks_twilio_before_sending_again(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    created: bool,
) -> None:
    auth = twilio_school.auth
    number = phone(0)
    twilio.script(number, Answer.server_error(created=created))
    cid = await launch(client, twilio_school, number)

    assert await delivery.run_once() == 1

    recipient = await one(client, auth, cid, number)
    assert recipient["status"] == "scheduled"
    assert recipient["failed_reason"] == reason("reattempting", "20500")
    [attempt] = recipient["attempts_history"]
    assert (attempt["status"], attempt["provider_message_id"]) == ("unknown", None)
    assert twilio.list_requests == []

    await make_due(sessionmaker, cid)
    assert await delivery.run_once() == 1

    # The next cycle lists the number's messages first, and sends only if none went out.
    if created:
        assert twilio.events == [("create", number), ("list", number)]
    else:
        assert twilio.events == [("create", number), ("list", number), ("create", number)]
    [listing] = twilio.list_requests
    assert listing["To"] == number
    assert len(twilio.messages) == 1
    recipient = await one(client, auth, cid, number)
    assert recipient["status"] == "queued"
    assert recipient["failed_reason"] is None
    assert recipient["next_attempt_at"] is None
    # Still the one hand-over, now with its message id.
    assert recipient["attempts"] == 1
    [attempt] = recipient["attempts_history"]
    assert attempt["provider_message_id"] == twilio.sid_to(number)
    assert attempt["status"] == "queued"

    await make_due(sessionmaker, cid)
    assert await delivery.run_once() == 0
    assert len(twilio.requests) == (1 if created else 2)


async def test_read_timeout_is_soft_and_the_message_is_not_sent_twice(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    sessionmaker: Sessions,
    settings: Settings,
) -> None:
    auth = twilio_school.auth
    number = phone(0)
    # Twilio takes the message but answers after our read timeout.
    twilio.script(number, Answer.slow(0.4, created=True))
    cid = await launch(client, twilio_school, number)
    assert settings.secret_key

    async def no_simulator(receipt: Receipt) -> None:
        raise AssertionError("the simulator is not used here")

    async with httpx.AsyncClient(
        timeout=httpx.Timeout(0.15, connect=1.0), trust_env=False
    ) as impatient:
        registry = Registry(
            impatient, SecretBox(settings.secret_key), settings.public_base_url, no_simulator
        )
        delivery = Engine(sessionmaker, settings, registry)
        assert await delivery.run_once() == 1

        recipient = await one(client, auth, cid, number)
        assert recipient["status"] == "scheduled"
        assert recipient["failed_reason"] == reason("reattempting", None)
        [attempt] = recipient["attempts_history"]
        assert (attempt["status"], attempt["provider_message_id"]) == ("unknown", None)

        for _ in range(300):  # until the fake has finished its slow answer
            if twilio.messages:
                break
            await asyncio.sleep(0.01)
        await make_due(sessionmaker, cid)
        assert await delivery.run_once() == 1

    assert twilio.events == [("create", number), ("list", number)]
    recipient = await one(client, auth, cid, number)
    assert recipient["status"] == "queued"
    assert recipient["attempts_history"][0]["provider_message_id"] == twilio.sid_to(number)


async def test_a_hand_over_cut_short_by_a_crash_is_recovered_after_close_not_sent(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    """A worker sent one of its two messages and died; staff then closed the campaign.
    When the lease runs out, the message that went out is found and recorded (its receipts
    still count: README, Delivery), and the one that did not is not sent."""
    auth = twilio_school.auth
    cid = await launch(client, twilio_school, phone(0), phone(1))
    jobs = await delivery.claim()
    await delivery.send([j for j in jobs if j.message.to == phone(0)], asyncio.Event())
    response = await client.post(f"/v1/campaigns/{cid}/close", headers=auth)
    assert response.status_code == 200, response.text
    await make_due(sessionmaker, cid)  # the lease runs out

    assert await delivery.run_once() == 2

    assert len(twilio.requests) == 1  # asked (find_sent), nothing sent
    assert sorted(to or "" for kind, to in twilio.events if kind == "list") == [phone(0), phone(1)]
    found = await one(client, auth, cid, phone(0))
    [attempt] = found["attempts_history"]
    assert attempt["provider_message_id"] == twilio.sid_to(phone(0))
    assert await receipt(sessionmaker, twilio.sid_to(phone(0)), "delivered") == "applied"
    assert (await one(client, auth, cid, phone(0)))["status"] == "delivered"
    never_sent = await one(client, auth, cid, phone(1))
    assert (never_sent["status"], never_sent["attempts_history"]) == ("queued", [])
    assert never_sent["next_attempt_at"] is None
    assert await delivery.run_once() == 0
    assert len(twilio.requests) == 1


async def test_a_hand_over_cut_short_by_a_crash_is_recovered_after_an_opt_out(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    """The worker sent the message and died; then the number opted out. When the lease
    runs out, the message that went out is still recorded (its receipts need it), and
    the recipient stays Failed, opted out."""
    auth = twilio_school.auth
    number = phone(0)
    cid = await launch(client, twilio_school, number)
    await delivery.send(await delivery.claim(), asyncio.Event())
    response = await client.post("/v1/opt-outs", json={"phone": number}, headers=auth)
    assert response.status_code == 201, response.text
    await make_due(sessionmaker, cid)  # the lease runs out

    assert await delivery.run_once() == 1

    assert len(twilio.requests) == 1  # asked, not sent again
    recipient = await one(client, auth, cid, number)
    assert (recipient["status"], recipient["failed_reason"]["code"]) == ("failed", "opted_out")
    [attempt] = recipient["attempts_history"]
    assert attempt["provider_message_id"] == twilio.sid_to(number)
    assert recipient["next_attempt_at"] is None
    assert await delivery.run_once() == 0


async def test_an_expired_retry_whose_lost_answer_went_out_is_recorded_not_failed(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    """Twilio answered 500 but made the message: when the retry age has run out by the
    time the retry is due, the engine still asks first, and the phone's message counts."""
    auth = twilio_school.auth
    policy = {"base_delay_seconds": 60, "max_delay_seconds": 3600, "max_retry_age_seconds": 60}
    response = await client.patch("/v1/school", json={"retry_policy": policy}, headers=auth)
    assert response.status_code == 200, response.text
    number = phone(0)
    twilio.script(number, Answer.server_error(created=True))
    cid = await launch(client, twilio_school, number)
    assert await delivery.run_once() == 1
    assert (await one(client, auth, cid, number))["status"] == "scheduled"

    await make_due(sessionmaker, cid, first_attempt_at=now() - timedelta(seconds=61))
    assert await delivery.run_once() == 1

    recipient = await one(client, auth, cid, number)
    assert (recipient["status"], recipient["failed_reason"]) == ("queued", None)
    [attempt] = recipient["attempts_history"]
    assert attempt["provider_message_id"] == twilio.sid_to(number)
    assert len(twilio.requests) == 1  # found, not sent again
    assert await receipt(sessionmaker, twilio.sid_to(number), "delivered") == "applied"
    assert (await campaign_of(client, auth, cid))["status"] == "complete"


async def test_recovery_does_not_take_another_campaigns_message(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    auth = twilio_school.auth
    number = phone(0)
    same = "School is closed tomorrow."
    # Two campaigns, the same text to the same number; one create is lost in a 5xx.
    twilio.script(number, Answer(), Answer.server_error(created=False))
    first = await launch(client, twilio_school, number, body=same)
    second = await launch(client, twilio_school, number, body=same)
    assert await delivery.run_once() == 2
    await make_due(sessionmaker, first)
    await make_due(sessionmaker, second)

    assert await delivery.run_once() == 1

    assert twilio.sends_to(number) == 3
    sids = set()
    for cid in (first, second):
        recipient = await one(client, auth, cid, number)
        assert recipient["status"] == "queued"
        [attempt] = recipient["attempts_history"]
        sids.add(attempt["provider_message_id"])
    assert sids == {m["sid"] for m in twilio.messages}


async def same_text_both_lost_in_5xx(
    client: httpx.AsyncClient,
    school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> tuple[str, list[str]]:
    """Two campaigns send the same text to one number; both creates answer 500 although
    both messages went out. Returns the number and the campaigns."""
    number = phone(0)
    same = "School is closed tomorrow."
    twilio.script(number, Answer.server_error(created=True), Answer.server_error(created=True))
    campaigns = [await launch(client, school, number, body=same) for _ in range(2)]
    assert await delivery.run_once() == 2
    for cid in campaigns:
        await make_due(sessionmaker, cid)
    return number, campaigns


async def test_recoveries_in_one_batch_never_record_one_message_twice(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    auth = twilio_school.auth
    number, campaigns = await same_text_both_lost_in_5xx(
        client, twilio_school, twilio, delivery, sessionmaker
    )

    # The two recoveries take turns, the second excluding what the first found: each
    # keeps its own message, and nothing is sent again.
    creates = len(twilio.messages)
    assert await delivery.run_once() == 2
    sids = []
    for cid in campaigns:
        recipient = await one(client, auth, cid, number)
        assert recipient["status"] == "queued"
        [attempt] = recipient["attempts_history"]
        sids.append(attempt["provider_message_id"])
    assert sids[0] != sids[1]
    assert set(sids) <= {m["sid"] for m in twilio.messages}
    assert len(twilio.messages) == creates


async def test_recoveries_find_each_their_own_message(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    number, campaigns = await same_text_both_lost_in_5xx(
        client, twilio_school, twilio, delivery, sessionmaker
    )
    for _ in range(3):
        await delivery.run_once()
        for cid in campaigns:
            await make_due(sessionmaker, cid)

    sids = set()
    for cid in campaigns:
        recipient = await one(client, twilio_school.auth, cid, number)
        assert recipient["status"] == "queued"
        sids.add(recipient["attempts_history"][0]["provider_message_id"])
    assert sids == {m["sid"] for m in twilio.messages}
    assert twilio.sends_to(number) == 2  # no duplicate


async def test_a_worker_that_outlived_its_lease_leaves_the_recipient_to_its_heir(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    auth = twilio_school.auth
    number = phone(0)
    cid = await launch(client, twilio_school, number)
    # A worker hands the message over, then stalls past its lease before recording.
    stalled = await delivery.send(await delivery.claim(), asyncio.Event())
    await make_due(sessionmaker, cid)  # the lease runs out

    # Another worker takes the hand-over over: it finds the message and records it.
    assert await delivery.run_once() == 1
    assert twilio.events == [("create", number), ("list", number)]
    # The stalled worker's record comes last: its attempt is recorded already, and the
    # recipient is no longer its to change.
    await delivery.record(stalled)

    recipient = await one(client, auth, cid, number)
    assert (recipient["status"], recipient["attempts"], recipient["next_attempt_at"]) == (
        "queued",
        1,
        None,
    )
    [attempt] = recipient["attempts_history"]
    assert attempt["provider_message_id"] == twilio.sid_to(number)
    await make_due(sessionmaker, cid)
    assert await delivery.run_once() == 0  # nothing is due: it was handed over once
    assert len(twilio.messages) == 1


async def test_a_stale_worker_releasing_its_batch_leaves_the_heir_s_hand_over(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    auth = twilio_school.auth
    number = phone(0)
    cid = await launch(client, twilio_school, number)
    stalled = await delivery.claim()  # worker A claims, then stalls before sending
    await make_due(sessionmaker, cid)  # its lease runs out
    taken_over = await delivery.claim()  # worker B takes the hand-over over
    [job] = taken_over
    assert job.recovering
    sent = await delivery.send(taken_over, asyncio.Event())  # nothing went out: B sends

    # A stops (SIGTERM) before sending and releases its batch, then B records.
    await delivery.record([Handover(j, None) for j in stalled])
    await delivery.record(sent)

    recipient = await one(client, auth, cid, number)
    assert (recipient["status"], recipient["attempts"], recipient["next_attempt_at"]) == (
        "queued",
        1,
        None,
    )
    assert await delivery.run_once() == 0
    assert twilio.sends_to(number) == 1


async def test_a_stale_worker_s_lost_answer_does_not_undo_the_heir_s_send(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    auth = twilio_school.auth
    number = phone(0)
    cid = await launch(client, twilio_school, number)
    twilio.script(number, Answer.server_error())  # A's create: 500, nothing created
    stalled = await delivery.send(await delivery.claim(), asyncio.Event())
    await make_due(sessionmaker, cid)  # A's lease runs out before it records
    heir = await delivery.send(await delivery.claim(), asyncio.Event())  # B finds none, sends

    await delivery.record(stalled)  # A's lost answer comes first
    await delivery.record(heir)

    recipient = await one(client, auth, cid, number)
    assert (recipient["status"], recipient["next_attempt_at"]) == ("queued", None)
    assert [a["provider_message_id"] for a in recipient["attempts_history"]] == [
        twilio.sid_to(number)
    ]
    await make_due(sessionmaker, cid)
    assert await delivery.run_once() == 0
    assert len(twilio.messages) == 1

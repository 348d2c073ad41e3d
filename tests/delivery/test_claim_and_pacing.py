"""The claim and the provider's rate, end to end: the real Engine, Registry and Twilio adapter on
a real httpx client, against the fake Twilio on loopback; campaigns made and read over the
API. "Time passing" is simulated in SQL only; nothing of Campanile's is patched.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.delivery.engine import ACTIVATE_SECONDS, Engine
from app.kit.db import unit_of_work
from app.models import Campaign
from tests.support.api import launched, make_school, people
from tests.support.delivery import (
    BODY,
    Sessions,
    TimedFakeTwilio,
    TwilioSchool,
    at,
    attempt_holding,
    by_phone,
    campaign_of,
    launch,
    make_due,
    named_in,
    now,
    one,
    phone,
    set_twilio_account,
)


async def test_first_sends_reach_twilio_and_wait_in_queue(
    sessionmaker: Sessions,
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    auth = twilio_school.auth
    cid = await launch(client, twilio_school, phone(0), phone(1))

    assert await delivery.run_once() == 2

    requests = sorted(twilio.requests, key=lambda r: r.to or "")
    assert [(r.to, r.body, r.from_number) for r in requests] == [
        (phone(0), "Hi Kid0, school is closed tomorrow.", twilio.from_number),
        (phone(1), "Hi Kid1, school is closed tomorrow.", twilio.from_number),
    ]
    # Each message's status callback names the attempt that holds it.
    for r in requests:
        named = named_in(r.status_callback, delivery.registry.names)
        assert named is not None
        assert named == await attempt_holding(sessionmaker, twilio.sid_to(r.to or ""))
    # The auth token was sealed by PUT /v1/school/provider and opened by the registry.
    assert all(r.authenticated for r in requests)
    for n in (0, 1):
        recipient = await one(client, auth, cid, phone(n))
        assert recipient["status"] == "queued"
        assert recipient["status_label"] == "Still in Queue"
        assert recipient["status_group"] == "in_progress"
        assert recipient["failed_reason"] is None
        assert recipient["attempts"] == 1
        assert recipient["next_attempt_at"] is None  # the lease is given back
        [attempt] = recipient["attempts_history"]
        assert attempt["provider"] == "twilio"
        assert attempt["provider_message_id"] == twilio.sid_to(phone(n))
        assert attempt["provider_message_id"].startswith("SM")
        assert attempt["status"] == "queued"
        assert attempt["error_code"] is None
    campaign = await campaign_of(client, auth, cid)
    assert campaign["status"] == "active"
    assert campaign["counts"] == {
        "total": 2,
        "queued": 2,
        "pending": 0,
        "scheduled": 0,
        "delivered": 0,
        "failed": 0,
    }
    # Nothing more is due: a second cycle sends nothing.
    assert await delivery.run_once() == 0
    assert len(twilio.requests) == 2


async def test_rate_limit_spaces_sends_and_caps_each_claim(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    auth = twilio_school.auth
    rate = 20.0
    await set_twilio_account(client, auth, twilio, max_messages_per_second=rate)
    interval = 1 / rate
    horizon = max(delivery.settings.worker_poll_seconds, 1.0)
    per_cycle = int(horizon * rate)
    assert per_cycle < delivery.settings.worker_batch_size  # the rate is what limits
    numbers = [phone(i) for i in range(per_cycle + 5)]
    cid = await launch(client, twilio_school, *numbers)

    before = now()
    jobs = await delivery.claim()
    claimed = now()
    assert len(jobs) == per_cycle
    # Each one over the rate is promised a turn of its own, one interval apart, after the
    # slots taken (a second on from the claim): not due until then.
    waiting = [r for r in (await by_phone(client, auth, cid)).values() if r["attempts"] == 0]
    assert len(waiting) == 5
    assert all(r["status"] == "queued" for r in waiting)
    turns = sorted(at(r["next_attempt_at"]) for r in waiting)
    first_turn = timedelta(seconds=horizon)
    assert before + first_turn <= turns[0] <= claimed + first_turn
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(turns)]
    assert gaps == pytest.approx([interval] * 4)
    # Nothing more is due before the first turn: a claim then takes none. (A slow machine
    # may get here after it: then the claim takes the turns that have come.)
    early = await delivery.claim()
    assert len(early) <= sum(1 for turn in turns if turn <= now()), early
    jobs += early
    await delivery.record(await delivery.send(jobs, asyncio.Event()))
    assert len(twilio.requests) == len(jobs)

    await asyncio.sleep((turns[-1] - now()).total_seconds())
    assert await delivery.run_once() == 5 - len(early)
    assert {r.to for r in twilio.requests} == set(numbers)
    # No request goes before its slot: the k-th, across both cycles, arrives no sooner
    # than k intervals after the first claim began (in the engine's clock). How much later
    # depends on the machine.
    arrivals = sorted(arrived for arrived, _ in twilio.arrivals)
    for k, arrived in enumerate(arrivals):
        assert arrived >= before + k * timedelta(seconds=interval), (k, arrived - before)


def sent_writes(engine: AsyncEngine) -> tuple[list[str], Callable[[], None]]:
    """The UPDATE statements sent on the engine from now on (their text, one line each),
    and a function that stops listening."""
    writes: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        text = " ".join(statement.split())
        if "UPDATE recipients" in text or "UPDATE provider_accounts" in text:
            writes.append(text)

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    return writes, lambda: event.remove(engine.sync_engine, "before_cursor_execute", seen)


async def test_a_claim_writes_what_it_decided_in_one_statement(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    engine: AsyncEngine,
) -> None:
    """The leases, the recipients over the rate put off to their turn and the account's
    send slots go in one statement (a round trip is a large share of a claim: bench/claim.py);
    a claim that only leases sends that UPDATE alone, with no part over empty arrays."""
    numbers = [phone(i) for i in range(4)]
    await launch(client, twilio_school, *numbers[:2])
    writes, stop = sent_writes(engine)
    try:
        assert len(await delivery.claim()) == 2
    finally:
        stop()
    assert len(writes) == 1 and writes[0].startswith("UPDATE recipients"), writes

    await set_twilio_account(client, twilio_school.auth, twilio, max_messages_per_second=1)
    await launch(client, twilio_school, *numbers[2:])
    writes, stop = sent_writes(engine)
    try:
        assert len(await delivery.claim()) == 1  # one slot in the coming second
    finally:
        stop()
    assert len(writes) == 1, writes
    assert writes[0].startswith("WITH settled AS ( UPDATE recipients"), writes
    assert "slots AS ( UPDATE provider_accounts" in writes[0]


async def test_a_rate_under_one_a_second_still_sends(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    """Long codes and alphanumeric senders may allow one message every few seconds."""
    auth = twilio_school.auth
    await set_twilio_account(client, auth, twilio, max_messages_per_second=0.5)
    cid = await launch(client, twilio_school, phone(0), phone(1), phone(2))

    before = now()
    assert await delivery.run_once() == 1
    after = now()

    waiting = [r for r in (await by_phone(client, auth, cid)).values() if r["attempts"] == 0]
    turns = sorted(at(r["next_attempt_at"]) for r in waiting)
    assert [round((t - turns[0]).total_seconds(), 3) for t in turns] == [0.0, 2.0]
    # The next turn is one interval (2 s) after the claim's send slot.
    assert before + timedelta(seconds=2) <= turns[0] <= after + timedelta(seconds=2)
    await asyncio.sleep((turns[0] - now()).total_seconds())
    assert await delivery.run_once() == 1
    assert len(twilio.requests) == 2
    # Each went out at its slot or later (how much later depends on the machine): the
    # second not before its turn, 2 s after the first one's slot.
    [(first, _), (second, to)] = twilio.arrivals
    assert first >= before
    assert second >= turns[0]
    assert to in {r["phone"] for r in waiting}


async def test_a_rate_limited_backlog_does_not_hold_up_other_schools(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    """A school on a slow sender with more due than a claim takes: the claims after it
    still reach another school's recipients, instead of taking the same backlog again."""
    await set_twilio_account(client, twilio_school.auth, twilio, max_messages_per_second=2)
    backlog = [phone(i) for i in range(12)]
    await launch(client, twilio_school, *backlog)
    other_school, other_auth = await make_school(client, name="Other", sending_window=None)
    await set_twilio_account(client, other_auth, twilio)
    other = phone(99)
    await launch(client, TwilioSchool(other_school["id"], other_auth), other)
    settings = delivery.settings.model_copy(update={"worker_batch_size": 5})
    engine = Engine(delivery.sessionmaker, settings, delivery.registry)

    before = now()
    for _ in range(3):
        await engine.run_once()

    # The other school's one went out in the third claim (waiting behind the whole
    # backlog, two a claim, it would have gone in the fifth); the slow school's at its
    # rate all along: its k-th send no sooner than k intervals (0.5 s) after the first
    # claim began (in the engine's clock), across the claims.
    assert other in {to for _, to in twilio.arrivals}
    slow = sorted(arrived for arrived, to in twilio.arrivals if to != other)
    for k, arrived in enumerate(slow):
        assert arrived >= before + k * timedelta(seconds=0.5), (k, arrived - before)


async def test_a_closed_backlog_does_not_hold_up_the_next_campaign(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    """Turns promised to a backlog that staff then closed are given back."""
    auth = twilio_school.auth
    await set_twilio_account(client, auth, twilio, max_messages_per_second=1)
    backlog = await launch(client, twilio_school, *(phone(i) for i in range(30)))
    assert await delivery.run_once() == 1  # the other 29 promised turns, a second apart
    response = await client.post(f"/v1/campaigns/{backlog}/close", headers=auth)
    assert response.status_code == 200, response.text

    following = await launch(client, twilio_school, phone(50), phone(51), phone(52))
    assert len(await delivery.claim()) == 1

    waiting = [r for r in (await by_phone(client, auth, following)).values() if not r["attempts"]]
    assert len(waiting) == 2
    assert all(at(r["next_attempt_at"]) < now() + timedelta(seconds=5) for r in waiting)


async def scheduled_then_due(
    client: httpx.AsyncClient,
    school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> str:
    """A campaign launched to start in an hour (the engine looks at it: nothing to send),
    then the hour passes; returns the campaign."""
    later = (now() + timedelta(hours=1)).isoformat()
    campaign = await launched(client, school.auth, people(phone(0)), body=BODY, send_at=later)
    assert campaign["status"] == "scheduled"
    assert await delivery.run_once() == 0
    assert twilio.requests == []
    async with unit_of_work(sessionmaker) as session:
        await session.execute(
            update(Campaign)
            .where(Campaign.id == uuid.UUID(campaign["id"]))
            .values(send_at=now() - timedelta(seconds=1))
        )
    await make_due(sessionmaker, campaign["id"])
    cid: str = campaign["id"]
    return cid


async def test_a_scheduled_campaign_starts_when_its_time_comes(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    cid = await scheduled_then_due(client, twilio_school, twilio, delivery, sessionmaker)
    await asyncio.sleep(ACTIVATE_SECONDS)  # the worker looks at most once a second
    assert await delivery.run_once() == 1
    assert (await campaign_of(client, twilio_school.auth, cid))["status"] == "active"
    assert twilio.sends_to(phone(0)) == 1


async def test_recipients_due_before_their_campaign_starts_wait_for_it(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    await scheduled_then_due(client, twilio_school, twilio, delivery, sessionmaker)
    # A claim before the campaign is started (a cycle within the second of the last look
    # at scheduled campaigns does not look again; `claim` alone never looks, whatever the
    # time): its recipient stays due.
    assert await delivery.claim() == []
    await asyncio.sleep(ACTIVATE_SECONDS)
    assert await delivery.run_once() == 1
    assert twilio.sends_to(phone(0)) == 1

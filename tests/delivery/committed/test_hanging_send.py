"""A send that hangs (a provider brownout: no answer until the client's timeout) delays
only itself: the other answers of its batch are recorded, and their receipts applied,
while it hangs, and the worker goes on claiming and sending; the bound on sends in flight
stays. The real Engine, pipelined as the worker runs it, against the fake Twilio, whose
hanging sends are held open until the test releases them (no timing)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.delivery import applier
from app.delivery.engine import Engine
from app.delivery.gate import STRAGGLERS_PER_PLACE
from app.kit.db import unit_of_work
from tests.fakes.twilio import Answer
from tests.support.delivery import (
    Sessions,
    TimedFakeTwilio,
    TwilioSchool,
    at,
    launch,
    make_due,
    now,
    one,
    phone,
)
from tests.support.delivery import (
    committed_receipt as receipt,
)

# A failing test gives up after this long; no assertion depends on it.
PATIENCE_SECONDS = 60.0


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A client whose timeout no hold in these tests reaches, however slow the machine:
    a hanging send ends when the test releases it."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0), trust_env=False) as client:
        yield client


async def recorded(client: httpx.AsyncClient, school: TwilioSchool, cid: str, number: str) -> Any:
    """The recipient once an attempt with a message id is recorded for it."""
    async with asyncio.timeout(PATIENCE_SECONDS):
        while True:
            recipient = await one(client, school.auth, cid, number)
            if any(a["provider_message_id"] for a in recipient["attempts_history"]):
                return recipient
            await asyncio.sleep(0.02)


async def hanging(twilio: TimedFakeTwilio, number: str) -> None:
    """Once a send to `number` hangs at the fake."""
    async with asyncio.timeout(PATIENCE_SECONDS):
        while True:
            if twilio.hanging(number):
                return
            await asyncio.sleep(0.01)


async def test_a_hanging_send_delays_only_itself(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    stuck, others = phone(0), [phone(1), phone(2), phone(3)]
    release = asyncio.Event()
    twilio.hang(stuck, release)
    cid = await launch(client, twilio_school, stuck, *others)
    stopping = asyncio.Event()
    assert await delivery.run_pipelined(stopping) == 4
    await hanging(twilio, stuck)

    # While it hangs: the others are recorded, and their receipts applied.
    for number in others:
        recipient = await recorded(client, twilio_school, cid, number)
        [attempt] = recipient["attempts_history"]
        applied = await receipt(sessionmaker, attempt["provider_message_id"], "delivered")
        assert applied == [applier.Result.applied]
        assert (await one(client, twilio_school.auth, cid, number))["status"] == "delivered"
    # ... and the worker goes on: a campaign launched now is sent and recorded.
    later = await launch(client, twilio_school, phone(4))
    assert await delivery.run_pipelined(stopping) == 1
    await recorded(client, twilio_school, later, phone(4))

    assert twilio.hanging(stuck) == 1  # (all of that while it hung)
    held = await one(client, twilio_school.auth, cid, stuck)
    assert (held["status"], held["attempts_history"]) == ("queued", [])  # Still in Queue

    release.set()
    await delivery.drain()
    held = await recorded(client, twilio_school, cid, stuck)
    assert held["status"] == "queued"
    assert twilio.sends_to(stuck) == 1


async def test_hanging_sends_still_count_against_the_concurrency(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    """WORKER_CONCURRENCY sends in flight at most, whatever batch they are from: with two
    hanging at concurrency 2 (and sends that never count as straggling), the next batch's
    send starts only once one is answered."""
    engine = Engine(
        delivery.sessionmaker,
        delivery.settings.model_copy(
            update={"worker_concurrency": 2, "worker_straggling_seconds": 3600.0}
        ),
        delivery.registry,
    )
    release = asyncio.Event()
    for number in (phone(0), phone(1)):
        twilio.hang(number, release)
    first = await launch(client, twilio_school, phone(0), phone(1))
    stopping = asyncio.Event()
    assert await engine.run_pipelined(stopping) == 2
    await hanging(twilio, phone(0))
    await hanging(twilio, phone(1))
    second = await launch(client, twilio_school, phone(2))
    assert await engine.run_pipelined(stopping) == 1  # claimed: its send waits its turn

    released = time.monotonic()
    release.set()
    await engine.drain()
    [(arrived, _)] = [c for c in twilio.creates if c[1] == phone(2)]
    assert arrived >= released
    for cid, number in ((first, phone(0)), (first, phone(1)), (second, phone(2))):
        await recorded(client, twilio_school, cid, number)


async def test_a_straggling_send_gives_its_place_to_the_next_up_to_the_stragglers_bound(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    """A send unanswered for `WORKER_STRAGGLING_SECONDS` gives its place to the next send and waits
    on among the stragglers (`app.delivery.gate`: `STRAGGLERS_PER_PLACE` a place). At
    concurrency 1, that many hanging sends step aside one by one, the next keeps the place
    (the stragglers are full), and only its answer lets the next send go."""
    aside = STRAGGLERS_PER_PLACE
    engine = Engine(
        delivery.sessionmaker,
        delivery.settings.model_copy(
            update={
                "worker_concurrency": 1,
                "worker_batch_size": aside + 1,
                "worker_straggling_seconds": 0.05,
            }
        ),
        delivery.registry,
    )
    release = asyncio.Event()
    stuck = [phone(i) for i in range(aside + 1)]
    for number in stuck:
        twilio.hang(number, release)
    cid = await launch(client, twilio_school, *stuck)
    stopping = asyncio.Event()
    assert await engine.run_pipelined(stopping) == aside + 1
    for number in stuck:  # each got to the fake: those before it stepped aside
        await hanging(twilio, number)
    last = phone(aside + 1)
    later = await launch(client, twilio_school, last)
    assert await engine.run_pipelined(stopping) == 1  # claimed: its send waits its turn
    await asyncio.sleep(0.2)  # (four times WORKER_STRAGGLING_SECONDS: no place frees)
    assert twilio.sends_to(last) == 0  # the last stuck one holds the one place

    released = time.monotonic()
    release.set()
    await engine.drain()
    [(arrived, _)] = [c for c in twilio.creates if c[1] == last]
    assert arrived >= released
    await recorded(client, twilio_school, later, last)
    for number in stuck:
        await recorded(client, twilio_school, cid, number)


async def test_the_batches_in_flight_admit_their_sends_on_one_connection(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    """A batch with a send hanging is in flight until it is answered. The batches in flight
    admit their sends on one connection (`app.delivery.admission`), not one each: with
    more such batches than the pool has connections (5 + 5 here), the worker still claims,
    and one backend holds every hanging send's admission lock."""
    engine = Engine(
        delivery.sessionmaker,
        delivery.settings.model_copy(
            update={
                "worker_concurrency": 20,
                "worker_batch_size": 1,
                "worker_straggling_seconds": 3600.0,
            }
        ),
        delivery.registry,
    )
    release = asyncio.Event()
    stuck = [phone(i) for i in range(12)]
    for number in stuck:
        twilio.hang(number, release)
    cid = await launch(client, twilio_school, *stuck)
    stopping = asyncio.Event()
    for _ in stuck:  # a batch each
        assert await engine.run_pipelined(stopping) == 1
    for number in stuck:
        await hanging(twilio, number)
    async with unit_of_work(sessionmaker) as session:
        holders = await session.scalar(
            text(
                "SELECT count(DISTINCT pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND mode = 'ShareLock' AND granted"
            )
        )
    assert holders == 1

    release.set()
    await engine.drain()
    for number in stuck:
        await recorded(client, twilio_school, cid, number)
    assert all(twilio.sends_to(number) == 1 for number in stuck)


async def test_a_stop_while_a_send_hangs_records_it_and_releases_the_rest(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    """Two batches claimed, one send hanging, the others waiting for their turn: a stop
    records the hanging send once it is answered, and releases every other claimed
    recipient unsent, due again at once. (Sends never count as straggling here: the
    others wait for the one place, `app.delivery.gate`.)"""
    engine = Engine(
        delivery.sessionmaker,
        delivery.settings.model_copy(
            update={
                "worker_concurrency": 1,
                "worker_batch_size": 2,
                "worker_straggling_seconds": 3600.0,
            }
        ),
        delivery.registry,
    )
    stuck, rest = phone(0), [phone(1), phone(2)]
    release = asyncio.Event()
    twilio.hang(stuck, release)
    cid = await launch(client, twilio_school, stuck)
    stopping = asyncio.Event()
    assert await engine.run_pipelined(stopping) == 1
    await hanging(twilio, stuck)
    later = await launch(client, twilio_school, *rest)
    assert await engine.run_pipelined(stopping) == 2  # claimed while the first batch sends

    stopping.set()
    release.set()
    await engine.drain()
    assert [to for _, to in twilio.creates] == [stuck]
    assert (await recorded(client, twilio_school, cid, stuck))["attempts"] == 1
    released_at = now()
    for number in rest:
        recipient = await one(client, twilio_school.auth, later, number)
        assert (recipient["status"], recipient["attempts"]) == ("queued", 0)
        assert recipient["attempts_history"] == []
        assert at(recipient["next_attempt_at"]) <= released_at  # due again at once

    assert await delivery.run_once() == 2  # the next worker sends them
    assert sorted(str(to) for _, to in twilio.creates) == [stuck, *rest]


async def test_a_recovery_beside_a_hanging_send_holds_up_only_its_own_record(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    """A batch with a recovery (its last answer was lost, the message went out) and a send
    that hangs: the worker goes on once the recovery has looked its message up, and the
    recovery is recorded once the sends claimed with it have answered."""
    lost, stuck, later = phone(0), phone(1), phone(2)
    twilio.script(lost, Answer.server_error(created=True))
    first = await launch(client, twilio_school, lost)
    assert await delivery.run_once() == 1
    [attempt] = (await one(client, twilio_school.auth, first, lost))["attempts_history"]
    assert (attempt["status"], attempt["provider_message_id"]) == ("unknown", None)

    release = asyncio.Event()
    twilio.hang(stuck, release)
    second = await launch(client, twilio_school, stuck)
    await make_due(sessionmaker, first)
    stopping = asyncio.Event()
    async with asyncio.timeout(PATIENCE_SECONDS):
        assert await delivery.run_pipelined(stopping) == 2  # the recovery and the stuck one
    await hanging(twilio, stuck)
    third = await launch(client, twilio_school, later)
    assert await delivery.run_pipelined(stopping) == 1
    await recorded(client, twilio_school, third, later)  # sent and recorded while it hangs
    [attempt] = (await one(client, twilio_school.auth, first, lost))["attempts_history"]
    assert attempt["provider_message_id"] is None  # the recovery waits for its batch

    release.set()
    await delivery.drain()
    recovered = await recorded(client, twilio_school, first, lost)
    assert (recovered["status"], recovered["attempts"]) == ("queued", 1)
    assert twilio.sends_to(lost) == 1  # found, not sent again
    await recorded(client, twilio_school, second, stuck)

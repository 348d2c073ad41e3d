""" "Did it go out?" has three answers (README, Delivery): sent, not sent, can't tell. The real
Engine against the fake Twilio on loopback, which lists messages as Twilio documents it
(https://www.twilio.com/docs/messaging/api/message-resource#read-multiple-message-resources):
sorted by date_sent, a message still queued with none, pages and next_page_uri."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import cast

import httpx
import pytest
from sqlalchemy import update

from app.delivery import recover
from app.delivery.engine import Engine
from app.delivery.jobs import Job
from app.kit.db import unit_of_work
from app.models import Attempt, Recipient
from app.providers.twilio.client import HOLDING_SECONDS
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

FAILING_LOOKUPS = {
    "429": Answer.throttled(),
    "500": Answer.server_error(),
    "503": Answer.server_error(503),
    # Past the engine's read timeout (2 s in these tests).
    "timeout": Answer(status=200, delay=2.5),
}


def messages_to(twilio: TimedFakeTwilio, number: str, body: str) -> list[str]:
    return [m["sid"] for m in twilio.messages if m["to"] == number and m["body"] == body]


@pytest.mark.parametrize("created", [True, False], ids=["went-through", "lost"])
async def test_nothing_is_sent_until_the_lookup_can_tell(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    created: bool,
) -> None:
    """Twilio answers the create with a 500, then answers the lookups with 429, 500, 503
    and a timeout: each time nothing is sent and the recipient is not due again at once.
    When a lookup answers, the message is found (or sent, once): one text at Twilio."""
    auth = twilio_school.auth
    number = phone(0)
    twilio.script(number, Answer.server_error(created=created))
    cid = await launch(client, twilio_school, number)
    assert await delivery.run_once() == 1
    [create] = twilio.requests
    assert create.body is not None

    twilio.script_list(*FAILING_LOOKUPS.values())
    for failure in FAILING_LOOKUPS:
        await make_due(sessionmaker, cid)
        before = len(twilio.list_requests)
        await delivery.run_once()
        assert len(twilio.list_requests) == before + 1, failure
        assert len(twilio.requests) == 1, f"sent after a lookup answered {failure}"
        recipient = await one(client, auth, cid, number)
        assert recipient["status"] not in ("failed", "delivered")
        assert at(recipient["next_attempt_at"]) > now(), "asked again at once"
        [attempt] = recipient["attempts_history"]
        assert attempt["provider_message_id"] is None
        assert await delivery.run_once() == 0  # not due: it waits for its next question

    await make_due(sessionmaker, cid)
    assert await delivery.run_once() == 1

    assert len(twilio.requests) == (1 if created else 2)
    [sid] = messages_to(twilio, number, create.body)
    recipient = await one(client, auth, cid, number)
    assert (recipient["status"], recipient["next_attempt_at"]) == ("queued", None)
    assert [a["provider_message_id"] for a in recipient["attempts_history"]] == [sid]
    await make_due(sessionmaker, cid)
    assert await delivery.run_once() == 0
    assert len(twilio.requests) == (1 if created else 2)


async def test_a_lost_answer_is_sent_again_only_after_twilio_could_hold_it(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    """Lookups that never answer: once the hand-over is older than the longest Twilio can
    hold a message (36,000 s) and no receipt named it, it is taken as not sent."""
    auth = twilio_school.auth
    number = phone(0)
    twilio.script(number, Answer.server_error(created=False))
    cid = await launch(client, twilio_school, number)
    assert await delivery.run_once() == 1
    twilio.script_list(*[Answer.server_error()] * 10)

    # Just inside the holding time: still not sent.
    await _hand_over_began(sessionmaker, cid, HOLDING_SECONDS - 600)
    await make_due(sessionmaker, cid)
    await delivery.run_once()
    assert len(twilio.requests) == 1
    recipient = await one(client, auth, cid, number)
    # Asked again no later than just past the holding time.
    assert at(recipient["next_attempt_at"]) <= now() + timedelta(seconds=601)

    await _hand_over_began(sessionmaker, cid, HOLDING_SECONDS + 1)
    await make_due(sessionmaker, cid)
    assert await delivery.run_once() == 1

    assert len(twilio.requests) == 2
    assert len(twilio.messages) == 1
    recipient = await one(client, auth, cid, number)
    assert (recipient["status"], recipient["next_attempt_at"]) == ("queued", None)
    assert [a["provider_message_id"] for a in recipient["attempts_history"]] == [
        twilio.messages[0]["sid"]
    ]


async def _hand_over_began(sessions: Sessions, campaign_id: str, seconds_ago: float) -> None:
    """Time passes: the recipients' hand-over (their attempt) began `seconds_ago`."""
    began = now() - timedelta(seconds=seconds_ago)
    async with unit_of_work(sessions) as session:
        ids = (
            update(Recipient)
            .where(Recipient.campaign_id == uuid.UUID(campaign_id))
            .values(claimed_at=began)
            .returning(Recipient.id)
        )
        recipient_ids = list((await session.execute(ids)).scalars())
        await session.execute(
            update(Attempt).where(Attempt.recipient_id.in_(recipient_ids)).values(created_at=began)
        )


@pytest.mark.parametrize("placement", ["first", "last"])
async def test_a_queued_message_behind_older_ones_is_found_not_sent_again(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    placement: str,
) -> None:
    """A parent with 35 older texts from the school (some with this very text, weeks ago);
    this attempt's message is still in Twilio's queue (no date_sent) and the list puts it
    first or last, on pages of 20. The recovery finds it: no second text."""
    auth = twilio_school.auth
    number = phone(0)
    twilio.queued_placement = placement
    twilio.max_page_size = 20
    body = "Hi Kid0, school is closed tomorrow."  # this campaign's text, rendered
    for i in range(35):
        text = body if i % 2 else f"Older news {i}"
        twilio.add_message(number, text, created_at=now() - timedelta(days=60 - i))
    twilio.script(number, Answer.server_error(created=True))
    cid = await launch(client, twilio_school, number)
    assert await delivery.run_once() == 1
    [create] = twilio.requests
    queued = [m for m in twilio.messages if m["status"] == "queued"]
    assert [m["date_sent"] for m in queued] == [None]

    await make_due(sessionmaker, cid)
    assert await delivery.run_once() == 1

    assert len(twilio.requests) == 1  # found, not sent again
    assert len(twilio.list_requests) == (1 if placement == "first" else 2)
    recipient = await one(client, auth, cid, number)
    assert recipient["status"] == "queued"
    assert [a["provider_message_id"] for a in recipient["attempts_history"]] == [queued[0]["sid"]]
    assert create.body is not None
    assert queued[0]["body"] == create.body


def test_a_lookup_that_cannot_tell_asks_again_later_and_later_until_the_holding_time() -> None:
    """The waits between asks grow as the hand-over ages (each as long as it is old, within
    the school's base and max delays), and the last ask comes just after the provider could
    no longer be holding the message (README, Delivery)."""
    started = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)

    class Provider:
        holding_seconds = 36_000.0

    job = cast(Job, SimpleNamespace(started=started, provider=Provider()))
    waits, now = [], started + timedelta(seconds=1)
    for _ in range(40):
        later = recover.ask_again_at(job, now, base=60, cap=3600)
        waits.append((later - now).total_seconds())
        now = later
        if now > started + timedelta(seconds=Provider.holding_seconds):
            break
    assert waits[0] == 60  # the base delay first
    *growing, last = waits
    assert growing == sorted(growing)  # each no sooner than the one before
    assert max(growing) == 3600  # the max delay caps them
    assert last <= 3600  # the last is cut at the holding time
    assert now == started + timedelta(seconds=Provider.holding_seconds + 1)

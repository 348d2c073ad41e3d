"""The school's sending window: nothing is sent outside it, a retry that falls after it
waits for its opening, and what is sent inside it may wait at Twilio only until it closes
(`ValidityPeriod`, README, Delivery). The real Engine against the fake Twilio on loopback.
"""

from __future__ import annotations

import math
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from app.delivery.engine import Engine
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


def hhmm(moment: datetime) -> str:
    return moment.strftime("%H:%M")


def next_local(start: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first moment after `after` when the local clock in `zone` reads `start`."""
    clock = time.fromisoformat(start)
    local = after.astimezone(zone)
    days = (local.date() + timedelta(days=d) for d in range(-1, 3))
    return min(
        opening
        for opening in (datetime.combine(day, clock, tzinfo=zone) for day in days)
        if opening > after
    )


async def test_outside_the_window_nothing_is_sent_until_it_opens(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    auth = twilio_school.auth
    zone = ZoneInfo("Asia/Kolkata")  # UTC+05:30: a half-hour offset shows zone mistakes
    local = now().astimezone(zone)
    window = {"start": hhmm(local + timedelta(hours=2)), "end": hhmm(local + timedelta(hours=3))}
    response = await client.patch(
        "/v1/school",
        json={"timezone": "Asia/Kolkata", "sending_window": window},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    number = phone(0)
    cid = await launch(client, twilio_school, number)

    before = now()
    assert await delivery.run_once() == 0

    assert twilio.requests == []
    recipient = await one(client, auth, cid, number)
    assert (recipient["status"], recipient["attempts"]) == ("queued", 0)
    assert recipient["attempts_history"] == []
    assert at(recipient["next_attempt_at"]) == next_local(window["start"], zone, before)

    # The window opens (moved to now here), and the recipient's time has come.
    local = now().astimezone(zone)
    window = {"start": hhmm(local - timedelta(hours=1)), "end": hhmm(local + timedelta(hours=1))}
    response = await client.patch("/v1/school", json={"sending_window": window}, headers=auth)
    assert response.status_code == 200, response.text
    await make_due(sessionmaker, cid)
    assert await delivery.run_once() == 1
    assert twilio.sends_to(number) == 1


async def test_a_retry_that_falls_after_the_window_waits_for_its_opening(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    auth = twilio_school.auth
    zone = ZoneInfo("America/Chicago")
    local = now().astimezone(zone)
    # Open now, closing within two minutes; the first retry is at least 30 minutes away.
    window = {"start": hhmm(local - timedelta(hours=1)), "end": hhmm(local + timedelta(minutes=2))}
    response = await client.patch(
        "/v1/school",
        json={
            "timezone": "America/Chicago",
            "sending_window": window,
            "retry_policy": {"base_delay_seconds": 3600, "max_delay_seconds": 3600},
        },
        headers=auth,
    )
    assert response.status_code == 200, response.text
    number = phone(0)
    twilio.script(number, Answer.throttled(retry_after=None))
    cid = await launch(client, twilio_school, number)

    before = now()
    assert await delivery.run_once() == 1

    recipient = await one(client, auth, cid, number)
    assert recipient["status"] == "scheduled"
    expected = next_local(window["start"], zone, before + timedelta(minutes=30))
    assert at(recipient["next_attempt_at"]) == expected


async def open_window(
    client: httpx.AsyncClient, school: TwilioSchool, zone: str, opened: timedelta, left: timedelta
) -> dict[str, str]:
    """Give the school a window open since `opened` ago, closing in about `left` (its end
    is a whole minute: up to a minute sooner)."""
    local = now().astimezone(ZoneInfo(zone))
    window = {"start": hhmm(local - opened), "end": hhmm(local + left)}
    response = await client.patch(
        "/v1/school", json={"timezone": zone, "sending_window": window}, headers=school.auth
    )
    assert response.status_code == 200, response.text
    return window


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/Chicago"])
async def test_a_message_may_wait_at_twilio_only_until_the_window_closes(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    zone: str,
) -> None:
    window = await open_window(client, twilio_school, zone, timedelta(hours=1), timedelta(hours=2))
    number = phone(0)
    await launch(client, twilio_school, number)

    before = now()  # before the claim
    assert await delivery.run_once() == 1
    after = now()  # after the send

    closes = next_local(window["end"], ZoneInfo(zone), before)
    [request] = twilio.requests
    assert request.validity_period is not None
    # The seconds left when the message was handed over, rounded down: the send happened
    # between `before` and `after`, however long the busy machine took.
    assert (
        math.floor((closes - after).total_seconds())
        <= int(request.validity_period)
        <= math.floor((closes - before).total_seconds())
    )
    assert twilio.sends_to(number) == 1


async def test_without_a_window_twilio_keeps_its_own_limit(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    number = phone(0)
    await launch(client, twilio_school, number)  # (the school has no window)

    assert await delivery.run_once() == 1

    [request] = twilio.requests
    assert request.validity_period is None
    assert "ValidityPeriod" not in dict(request.form)


async def test_more_than_ten_hours_left_is_twilios_longest_hold(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    await open_window(
        client, twilio_school, "Europe/Berlin", timedelta(minutes=30), timedelta(hours=11)
    )
    number = phone(0)
    await launch(client, twilio_school, number)

    assert await delivery.run_once() == 1

    [request] = twilio.requests
    assert request.validity_period == "36000"

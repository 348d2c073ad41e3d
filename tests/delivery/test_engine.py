"""The delivery engine end to end: the real Engine, the real Registry and Twilio adapter on a
real httpx client, against the fake Twilio server on loopback; campaigns made and read over
the API, as staff would see them.

"Time passing" between cycles is simulated in SQL only (a due recipient's `next_attempt_at`
set to now, or its `first_attempt_at` moved back for the retry age); nothing of Campanile's
is patched.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select, update

from app.config import Settings
from app.delivery.engine import ACTIVATE_SECONDS, Engine, Handover
from app.kit.crypto import SecretBox
from app.kit.db import unit_of_work
from app.models import Campaign, Recipient, StoredReceipt
from app.providers.base import Receipt
from app.providers.registry import Registry
from tests.fakes.twilio import Answer
from tests.support.api import apply_receipts, launched, make_school, people
from tests.support.delivery import (
    BODY,
    CALLBACK,
    REATTEMPTING_LABEL,
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
    reason,
    receipt,
    set_twilio_account,
)

# -- first sends -----------------------------------------------------------------------


async def test_first_sends_reach_twilio_and_wait_in_queue(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    auth = twilio_school.auth
    cid = await launch(client, twilio_school, phone(0), phone(1))

    assert await delivery.run_once() == 2

    requests = sorted(twilio.requests, key=lambda r: r.to or "")
    assert [(r.to, r.body, r.from_number, r.status_callback) for r in requests] == [
        (phone(0), "Hi Kid0, school is closed tomorrow.", twilio.from_number, CALLBACK),
        (phone(1), "Hi Kid1, school is closed tomorrow.", twilio.from_number, CALLBACK),
    ]
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


async def test_wrong_credentials_fail_as_sending_error(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    await set_twilio_account(client, twilio_school.auth, twilio, auth_token="not-the-token")
    cid = await launch(client, twilio_school, phone(0))

    assert await delivery.run_once() == 1

    [request] = twilio.requests
    assert not request.authenticated
    recipient = await one(client, twilio_school.auth, cid, phone(0))
    assert recipient["status"] == "failed"
    assert recipient["failed_reason"] == reason("sending_error", "20003")
    assert recipient["next_attempt_at"] is None


# -- synchronous errors at create ------------------------------------------------------

# What staff see after one cycle, for each answer the fake can give at create (README, Delivery).
CREATE_ERRORS: list[tuple[Answer, str, str, int, str, str]] = [
    # answer, status, reason, definition, provider_error_code, attempt status
    (Answer.error(21211), "failed", "invalid_number", 0, "21211", "failed"),
    (Answer.error(21408), "failed", "international_number", 0, "21408", "failed"),
    (Answer.error(21610), "failed", "opted_out", 0, "21610", "failed"),
    (Answer.error(21612), "failed", "international_number", 0, "21612", "failed"),
    (Answer.error(21614), "failed", "invalid_number", 0, "21614", "failed"),
    (Answer.error(21606), "failed", "sending_error", 0, "21606", "failed"),
    (Answer.error(21635), "failed", "unreachable_number", 1, "21635", "failed"),
    (Answer.error(29999), "failed", "failed_to_create", 0, "29999", "failed"),
    (Answer.throttled(), "scheduled", "reattempting", 0, "20429", "failed"),
    (Answer.error(21611), "scheduled", "reattempting", 0, "21611", "failed"),
    (Answer.server_error(), "scheduled", "reattempting", 0, "20500", "unknown"),
    (Answer.server_error(503), "scheduled", "reattempting", 0, "20500", "unknown"),
]


async def test_create_errors_end_in_their_reason(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    auth = twilio_school.auth
    numbers = [phone(i) for i in range(len(CREATE_ERRORS))]
    for number, (answer, *_) in zip(numbers, CREATE_ERRORS, strict=True):
        twilio.script(number, answer)
    cid = await launch(client, twilio_school, *numbers)

    assert await delivery.run_once() == len(numbers)

    for number, (answer, status, code, definition, error, attempt_status) in zip(
        numbers, CREATE_ERRORS, strict=True
    ):
        where = f"{number} answered HTTP {answer.status} / {answer.code}"
        recipient = await one(client, auth, cid, number)
        assert recipient["status"] == status, where
        assert recipient["failed_reason"] == reason(code, error, definition), where
        assert recipient["attempts"] == 1, where
        [attempt] = recipient["attempts_history"]
        assert attempt["provider_message_id"] is None, where
        assert (attempt["status"], attempt["error_code"]) == (attempt_status, error), where
        if status == "failed":
            assert recipient["next_attempt_at"] is None, where  # final: no retry
        else:
            assert recipient["status_label"] == "Scheduled", where
            assert recipient["failed_reason"]["label"] == REATTEMPTING_LABEL, where
            assert at(recipient["next_attempt_at"]) > now(), where
    counts = (await campaign_of(client, auth, cid))["counts"]
    assert (counts["failed"], counts["scheduled"]) == (8, 4)

    # Time passes: only the soft bounces are tried again; hard failures never are.
    await make_due(sessionmaker, cid)
    assert await delivery.run_once() == 4
    retried = {r.to for r in twilio.requests[len(numbers) :]}
    assert retried == {
        n for n, case in zip(numbers, CREATE_ERRORS, strict=True) if case[1] != "failed"
    }
    await make_due(sessionmaker, cid)
    assert await delivery.run_once() == 0


async def test_provider_opt_out_cancels_the_number_everywhere(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    auth = twilio_school.auth
    stop, other = phone(0), phone(1)
    # An earlier campaign: the number soft-bounced there and waits for its retry.
    twilio.script(stop, Answer.throttled())
    earlier = await launch(client, twilio_school, stop, other)
    assert await delivery.run_once() == 2
    assert (await one(client, auth, earlier, stop))["status"] == "scheduled"

    # A new campaign reaches the number after it replied STOP to Twilio.
    twilio.script(stop, Answer.error(21610))
    latest = await launch(client, twilio_school, stop)
    assert await delivery.run_once() == 1

    assert (await one(client, auth, latest, stop))["failed_reason"] == reason("opted_out", "21610")
    response = await client.get("/v1/opt-outs", headers=auth)
    assert response.status_code == 200, response.text
    [opt_out] = response.json()["items"]
    assert opt_out["phone"] == stop
    assert opt_out["source"] == "provider"
    assert opt_out["keyword"] is None
    assert opt_out["campaign_id"] == latest
    # Its waiting retry in the earlier campaign is cancelled; the other number is untouched.
    cancelled = await one(client, auth, earlier, stop)
    assert cancelled["status"] == "failed"
    assert cancelled["failed_reason"]["code"] == "opted_out"
    assert cancelled["next_attempt_at"] is None
    assert (await one(client, auth, earlier, other))["status"] == "queued"

    await make_due(sessionmaker, earlier)
    assert await delivery.run_once() == 0
    assert twilio.sends_to(stop) == 2


# -- throttling and provider errors ----------------------------------------------------


async def test_throttled_then_accepted_then_delivered(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    auth = twilio_school.auth
    number = phone(0)
    twilio.script(number, Answer.throttled(retry_after="600"))
    cid = await launch(client, twilio_school, number)

    before = now()
    assert await delivery.run_once() == 1
    after = now()

    recipient = await one(client, auth, cid, number)
    assert recipient["status"] == "scheduled"
    assert recipient["status_label"] == "Scheduled"
    assert recipient["status_group"] == "in_progress"
    assert recipient["failed_reason"] == reason("reattempting", "20429")
    assert recipient["failed_reason"]["label"] == REATTEMPTING_LABEL
    # Twilio's Retry-After (600 s) is longer than the first backoff (30-60 s): it wins.
    due = at(recipient["next_attempt_at"])
    assert before + timedelta(seconds=600) <= due <= after + timedelta(seconds=600)
    [attempt] = recipient["attempts_history"]
    assert (attempt["status"], attempt["error_code"]) == ("failed", "20429")

    await make_due(sessionmaker, cid)
    assert await delivery.run_once() == 1

    recipient = await one(client, auth, cid, number)
    assert recipient["status"] == "queued"
    assert recipient["failed_reason"] is None
    assert recipient["attempts"] == 2
    assert recipient["next_attempt_at"] is None
    sid = twilio.sid_to(number)
    assert [a["provider_message_id"] for a in recipient["attempts_history"]] == [None, sid]
    assert twilio.sends_to(number) == 2

    assert await receipt(sessionmaker, sid, "sent") == "applied"
    assert (await one(client, auth, cid, number))["status"] == "pending"
    assert await receipt(sessionmaker, sid, "delivered") == "applied"
    recipient = await one(client, auth, cid, number)
    assert (recipient["status"], recipient["status_label"]) == ("delivered", "Delivered")
    assert (await campaign_of(client, auth, cid))["status"] == "complete"


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


async def test_soft_bounces_back_off_until_accepted(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    auth = twilio_school.auth
    number = phone(0)
    # A Retry-After shorter than the backoff does not shorten it.
    twilio.script(number, Answer.error(21611), Answer.throttled(retry_after="1"))
    cid = await launch(client, twilio_school, number)
    policy = (await client.get("/v1/school", headers=auth)).json()["retry_policy"]
    base = policy["base_delay_seconds"]
    assert base == 60

    for attempt, nominal in ((1, base), (2, 2 * base)):
        before = now()
        assert await delivery.run_once() == 1
        after = now()
        recipient = await one(client, auth, cid, number)
        assert recipient["status"] == "scheduled"
        assert recipient["attempts"] == attempt
        # Equal jitter: between half the nominal delay and the nominal delay.
        due = at(recipient["next_attempt_at"])
        assert before + timedelta(seconds=nominal / 2) <= due <= after + timedelta(seconds=nominal)
        await make_due(sessionmaker, cid)

    assert await delivery.run_once() == 1
    recipient = await one(client, auth, cid, number)
    assert recipient["status"] == "queued"
    assert recipient["attempts"] == 3
    assert [(a["status"], a["error_code"]) for a in recipient["attempts_history"]] == [
        ("failed", "21611"),
        ("failed", "20429"),
        ("queued", None),
    ]
    assert twilio.sends_to(number) == 3


# -- close and archive -----------------------------------------------------------------


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


# -- sending window --------------------------------------------------------------------


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


# -- provider rate ---------------------------------------------------------------------


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

    jobs = await delivery.claim()
    claimed = now()
    assert len(jobs) == per_cycle
    # Each one over the rate is promised a turn of its own, one interval apart, after the
    # slots taken (a second on): not due until then.
    waiting = [r for r in (await by_phone(client, auth, cid)).values() if r["attempts"] == 0]
    assert len(waiting) == 5
    assert all(r["status"] == "queued" for r in waiting)
    turns = sorted(at(r["next_attempt_at"]) for r in waiting)
    assert claimed + timedelta(seconds=horizon - 0.1) < turns[0] < claimed + timedelta(seconds=2)
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(turns)]
    assert gaps == pytest.approx([interval] * 4)
    assert await delivery.claim() == []
    await delivery.record(await delivery.send(jobs, asyncio.Event()))
    assert len(twilio.requests) == per_cycle

    await asyncio.sleep((turns[-1] - now()).total_seconds())
    assert await delivery.run_once() == 5
    assert {r.to for r in twilio.requests} == set(numbers)
    # The k-th request never arrives before k intervals after the first one (some
    # tolerance for the loop's own latency), across both cycles.
    arrivals = sorted(twilio.arrivals)
    tolerance = 0.015
    for k, arrival in enumerate(arrivals):
        assert arrival - arrivals[0] >= k * interval - tolerance, (k, arrival - arrivals[0])
    # In any one second, at most `rate` requests (+1 for the window's edge).
    for i, start in enumerate(arrivals):
        within = sum(1 for a in arrivals[i:] if a - start < 1.0)
        assert within <= rate + 1


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

    assert await delivery.run_once() == 1

    waiting = [r for r in (await by_phone(client, auth, cid)).values() if r["attempts"] == 0]
    turns = sorted(at(r["next_attempt_at"]) for r in waiting)
    assert [round((t - turns[0]).total_seconds(), 3) for t in turns] == [0.0, 2.0]
    await asyncio.sleep((turns[0] - now()).total_seconds())
    assert await delivery.run_once() == 1
    assert len(twilio.requests) == 2
    [first, second] = twilio.arrivals
    assert second - first >= 2.0 - 0.015


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

    for _ in range(3):
        await engine.run_once()

    # The other school's one went out in the third claim (waiting behind the whole
    # backlog, two a claim, it would have gone in the fifth); the slow school's at its
    # rate all along.
    assert other in {to for _, to in twilio.creates}
    slow = sorted(t for t, to in twilio.creates if to != other)
    assert all(b - a >= 0.5 - 0.015 for a, b in itertools.pairwise(slow))


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


# -- retry age -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "failure_receipt", "final_reason", "code"),
    [
        pytest.param(Answer.throttled(), None, "sending_error", "20429", id="throttled"),
        pytest.param(Answer(), "30450", "blocked", "30450", id="receipt-30450"),
        pytest.param(Answer(), "30017", "unknown", "30017", id="receipt-30017"),
        pytest.param(
            Answer(status=503, code=29999, message="Service Unavailable"),
            None,
            "sending_error",
            "29999",
            id="5xx-unlisted-code",
        ),
    ],
)
async def test_expired_retry_fails_with_its_last_reason(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    answer: Answer,
    failure_receipt: str | None,
    final_reason: str,
    code: str,
) -> None:
    auth = twilio_school.auth
    response = await client.patch(
        "/v1/school",
        json={
            "retry_policy": {
                "base_delay_seconds": 60,
                "max_delay_seconds": 3600,
                "max_retry_age_seconds": 60,
            }
        },
        headers=auth,
    )
    assert response.status_code == 200, response.text
    number = phone(0)
    twilio.script(number, answer)
    cid = await launch(client, twilio_school, number)
    assert await delivery.run_once() == 1
    if failure_receipt is not None:
        sid = twilio.sid_to(number)
        assert await receipt(sessionmaker, sid, "failed", failure_receipt) == "applied"
    recipient = await one(client, auth, cid, number)
    assert recipient["status"] == "scheduled"
    assert recipient["failed_reason"] == reason("reattempting", code)

    # More than max_retry_age_seconds after the first attempt, the retry comes due.
    await make_due(sessionmaker, cid, first_attempt_at=now() - timedelta(seconds=61))
    await delivery.run_once()

    recipient = await one(client, auth, cid, number)
    assert recipient["status"] == "failed"
    assert recipient["failed_reason"] == reason(final_reason, code)
    assert recipient["next_attempt_at"] is None
    assert recipient["attempts"] == 1
    assert len(twilio.requests) == 1
    assert (await campaign_of(client, auth, cid))["status"] == "complete"


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


# -- receipts --------------------------------------------------------------------------


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


# -- completion ------------------------------------------------------------------------


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


# -- graceful shutdown -----------------------------------------------------------------


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
    # A claim within the second, before the campaign is started: its recipient stays due.
    assert await delivery.run_once() == 0
    await asyncio.sleep(ACTIVATE_SECONDS)
    assert await delivery.run_once() == 1
    assert twilio.sends_to(phone(0)) == 1


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

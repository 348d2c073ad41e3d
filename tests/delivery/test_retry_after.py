"""A provider's Retry-After as staff see its effect: a throttled recipient waits what Twilio
asked, never longer than the school's max_delay_seconds, and a value that is no number of
seconds at all (`inf`, `nan`) falls back to the school's backoff. Whatever the header says,
the batch it came in is recorded and nothing is lost.

Against the fake Twilio on loopback, through the real engine and the real API."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.delivery.engine import Engine
from tests.fakes.twilio import Answer
from tests.support.api import launched, people
from tests.support.delivery import TimedFakeTwilio, TwilioSchool, make_due, now, one

BASE_DELAY = 60
MAX_DELAY = 900
THROTTLED = "+12015550100"
ACCEPTED = "+12015550101"


@pytest.mark.parametrize(
    ("retry_after", "waits"),
    [
        # (the header, the wait it buys: "backoff" = the school's first backoff, 30-60 s)
        pytest.param("inf", "backoff", id="inf"),
        pytest.param("nan", "backoff", id="nan"),
        pytest.param("1e12", MAX_DELAY, id="1e12 seconds"),
        pytest.param("Fri, 31 Dec 9999 23:59:59 GMT", MAX_DELAY, id="year 9999"),
        pytest.param("86400", MAX_DELAY, id="longer than max_delay"),
        pytest.param("600", 600, id="within max_delay"),
    ],
)
async def test_retry_after_is_honoured_up_to_max_delay_and_nothing_is_lost(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: async_sessionmaker[AsyncSession],
    retry_after: str,
    waits: int | str,
) -> None:
    auth = twilio_school.auth
    policy = {"base_delay_seconds": BASE_DELAY, "max_delay_seconds": MAX_DELAY}
    patched = await client.patch("/v1/school", json={"retry_policy": policy}, headers=auth)
    assert patched.status_code == 200, patched.text
    twilio.script(THROTTLED, Answer.throttled(retry_after=retry_after))
    campaign = await launched(client, auth, people(THROTTLED, ACCEPTED))
    cid = campaign["id"]

    before = now()
    assert await delivery.run_once() == 2
    after = now()

    # The throttled recipient waits for its retry...
    throttled = await one(client, auth, cid, THROTTLED)
    assert (throttled["status"], throttled["status_label"]) == ("scheduled", "Scheduled")
    assert throttled["failed_reason"]["code"] == "reattempting"
    assert throttled["failed_reason"]["provider_error_code"] == "20429"
    assert throttled["attempts"] == 1
    due = datetime.fromisoformat(throttled["next_attempt_at"])
    if waits == "backoff":
        low, high = BASE_DELAY / 2, BASE_DELAY
    else:
        assert isinstance(waits, int)
        low = high = waits
    assert before + timedelta(seconds=low) <= due <= after + timedelta(seconds=high)
    # ...and the other message of the same batch was recorded as sent.
    accepted = await one(client, auth, cid, ACCEPTED)
    assert accepted["status"] == "queued"
    assert accepted["next_attempt_at"] is None
    sids = [a["provider_message_id"] for a in accepted["attempts_history"]]
    assert sids == [twilio.sid_to(ACCEPTED)]

    # When the retry comes due, the message goes out.
    await make_due(sessionmaker, cid)
    assert await delivery.run_once() == 1
    throttled = await one(client, auth, cid, THROTTLED)
    assert throttled["status"] == "queued"
    assert throttled["failed_reason"] is None
    assert throttled["attempts"] == 2
    assert twilio.sends_to(THROTTLED) == 2
    assert twilio.sends_to(ACCEPTED) == 1

"""What a provider's answer does to a recipient, end to end through the real Engine and the
fake Twilio on loopback: errors at create, throttling and server errors, soft bounces and
their retry age.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from app.delivery.engine import Engine
from tests.fakes.twilio import Answer
from tests.support.delivery import (
    REATTEMPTING_LABEL,
    Sessions,
    TimedFakeTwilio,
    TwilioSchool,
    at,
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


# What staff see after one cycle, for each answer the fake can give at create (README, Delivery).
CREATE_ERRORS: list[tuple[Answer, str, str, int, str, str]] = [
    # answer, status, reason, definition, provider_error_code, attempt status
    (Answer.error(21211), "failed", "invalid_number", 0, "21211", "failed"),
    (Answer.error(21408), "failed", "international_number", 0, "21408", "failed"),
    (Answer.error(21610), "failed", "opted_out", 0, "21610", "failed"),
    # docs/providers.md §1.5: no SMS route to the number → unreachable (never resent)
    (Answer.error(21612), "failed", "unreachable_number", 1, "21612", "failed"),
    # docs/providers.md §1.5: the school's sender, not the contact → sending_error
    (Answer.error(21401), "failed", "sending_error", 0, "21401", "failed"),
    (Answer.error(21608), "failed", "sending_error", 0, "21608", "failed"),
    (Answer.error(21659), "failed", "sending_error", 0, "21659", "failed"),
    (Answer.error(21660), "failed", "sending_error", 0, "21660", "failed"),
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
    failed = sum(1 for _, status, *_ in CREATE_ERRORS if status == "failed")
    assert (counts["failed"], counts["scheduled"]) == (failed, len(CREATE_ERRORS) - failed)

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

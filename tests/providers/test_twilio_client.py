"""TwilioProvider against the fake Twilio server on loopback."""

from __future__ import annotations

import asyncio
import email.utils
import socket
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.providers.base import OutboundMessage, Provider
from app.providers.twilio.client import TwilioProvider
from app.sending.outcomes import Classification, Outcome
from tests.fakes.twilio import Answer, FakeTwilio

TO = "+14155550123"
CALLBACK = "https://campanile.test/v1/webhooks/twilio/status"


def message(to: str = TO, body: str = "Hello from Lincoln High") -> OutboundMessage:
    return OutboundMessage(to=to, body=body, status_callback=CALLBACK)


async def test_first_send_is_accepted(twilio: TwilioProvider, fake_twilio: FakeTwilio) -> None:
    provider: Provider = twilio
    result = await provider.send(message())

    assert result.outcome is Outcome.accepted
    assert result.provider_message_id is not None
    assert result.provider_message_id.startswith("SM")
    assert result.provider_status == "queued"
    assert not result.outcome_unknown
    assert result.classification is None
    assert fake_twilio.sends_to(TO) == 1
    [request] = fake_twilio.requests
    assert request.authenticated
    assert (request.to, request.body, request.from_number, request.status_callback) == (
        TO,
        "Hello from Lincoln High",
        fake_twilio.from_number,
        CALLBACK,
    )
    assert request.messaging_service_sid is None


async def test_messaging_service_sender(http: httpx.AsyncClient, fake_twilio: FakeTwilio) -> None:
    provider = TwilioProvider(
        http,
        account_sid=fake_twilio.account_sid,
        auth_token=fake_twilio.auth_token,
        messaging_service_sid="MG" + "1" * 32,
        api_base=fake_twilio.url + "/",
    )
    result = await provider.send(OutboundMessage(to=TO, body="hi"))
    assert result.outcome is Outcome.accepted
    assert result.provider_status == "accepted"
    [request] = fake_twilio.requests
    assert request.messaging_service_sid == "MG" + "1" * 32
    assert request.from_number is None
    assert request.status_callback is None


@pytest.mark.parametrize("seconds", [1, 1800, 36_000])
async def test_the_window_left_goes_as_validity_period(
    twilio: TwilioProvider, fake_twilio: FakeTwilio, seconds: int
) -> None:
    result = await twilio.send(
        OutboundMessage(to=TO, body="hi", status_callback=CALLBACK, validity_seconds=seconds)
    )
    assert result.outcome is Outcome.accepted  # (the fake refuses what Twilio refuses)
    [request] = fake_twilio.requests
    assert request.validity_period == str(seconds)


@pytest.mark.parametrize("seconds", [0, 36_001])
async def test_a_validity_period_out_of_twilios_range_is_refused(
    twilio: TwilioProvider, fake_twilio: FakeTwilio, seconds: int
) -> None:
    """What the fake (as Twilio) does with a value the window arithmetic must never send."""
    result = await twilio.send(OutboundMessage(to=TO, body="hi", validity_seconds=seconds))
    assert result.outcome is not Outcome.accepted
    assert result.error_code == "21624"
    assert fake_twilio.messages == []


async def test_no_window_sends_no_validity_period(
    twilio: TwilioProvider, fake_twilio: FakeTwilio
) -> None:
    result = await twilio.send(message())
    assert result.outcome is Outcome.accepted
    [request] = fake_twilio.requests
    assert request.validity_period is None
    assert "ValidityPeriod" not in dict(request.form)


def test_a_sender_is_required(http: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError):
        TwilioProvider(http, account_sid="AC1", auth_token="t")


@pytest.mark.parametrize(
    ("code", "outcome", "reason", "definition"),
    [
        (21211, Outcome.hard, "invalid_number", 0),
        (21614, Outcome.hard, "invalid_number", 0),
        (21401, Outcome.hard, "sending_error", 0),  # the sender (SPEC §4)
        (21610, Outcome.hard, "opted_out", 0),
        (21408, Outcome.hard, "international_number", 0),
        (21612, Outcome.hard, "unreachable_number", 1),  # no SMS route (SPEC §4)
        (21608, Outcome.hard, "sending_error", 0),
        (21659, Outcome.hard, "sending_error", 0),
        (21660, Outcome.hard, "sending_error", 0),
        (21635, Outcome.hard, "unreachable_number", 1),
        (21606, Outcome.hard, "sending_error", 0),
        (21617, Outcome.hard, "failed_to_create", 0),
        (21611, Outcome.soft, "sending_error", 0),
        (29999, Outcome.hard, "failed_to_create", 0),  # not in the table
    ],
)
async def test_sync_errors_map_through_the_table(
    twilio: TwilioProvider,
    fake_twilio: FakeTwilio,
    code: int,
    outcome: Outcome,
    reason: str,
    definition: int,
) -> None:
    fake_twilio.script(TO, Answer.error(code, message=f"Twilio says {code}"))
    result = await twilio.send(message())
    assert result.outcome is outcome
    assert result.error_code == str(code)
    assert result.classification == Classification(reason, outcome is Outcome.soft, definition)
    assert result.provider_message_id is None
    assert not result.outcome_unknown
    assert result.error_message == f"Twilio says {code}"
    assert fake_twilio.sends_to(TO) == 1


async def test_wrong_credentials_are_a_hard_sending_error(
    http: httpx.AsyncClient, fake_twilio: FakeTwilio
) -> None:
    provider = TwilioProvider(
        http,
        account_sid=fake_twilio.account_sid,
        auth_token="wrong",
        from_number=fake_twilio.from_number,
        api_base=fake_twilio.url,
    )
    result = await provider.send(message())
    assert result.outcome is Outcome.hard
    assert result.error_code == "20003"
    assert result.classification == Classification("sending_error", False)
    assert fake_twilio.sends_to(TO) == 0


async def test_429_is_soft_with_retry_after(
    twilio: TwilioProvider, fake_twilio: FakeTwilio
) -> None:
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    fake_twilio.script(
        TO, Answer.throttled("7"), Answer.throttled(later), Answer.throttled(None), Answer()
    )
    first = await twilio.send(message())
    assert first.outcome is Outcome.soft
    assert first.error_code == "20429"
    assert first.classification is not None and first.classification.soft
    assert first.retry_after_seconds == 7.0
    assert not first.outcome_unknown  # a 429 is never processed

    second = await twilio.send(message())
    assert second.retry_after_seconds is not None
    assert 100 < second.retry_after_seconds <= 120

    third = await twilio.send(message())
    assert third.outcome is Outcome.soft and third.retry_after_seconds is None

    assert (await twilio.send(message())).outcome is Outcome.accepted
    assert fake_twilio.sends_to(TO) == 4


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_soft_and_outcome_unknown(
    twilio: TwilioProvider, fake_twilio: FakeTwilio, status: int
) -> None:
    fake_twilio.script(TO, Answer.server_error(status))
    result = await twilio.send(message())
    assert result.outcome is Outcome.soft
    assert result.outcome_unknown
    assert result.classification is not None and result.classification.soft


async def test_connection_refused_is_soft_and_not_sent(http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = TwilioProvider(
        http,
        account_sid="AC" + "0" * 32,
        auth_token="t",
        from_number="+15005550006",
        api_base=f"http://127.0.0.1:{port}",
    )
    result = await provider.send(message())
    assert result.outcome is Outcome.soft
    assert not result.outcome_unknown
    assert result.classification == Classification("sending_error", True)
    assert result.error_message is not None and "ConnectError" in result.error_message
    # Nor does the lookup raise.
    assert await provider.find_sent(TO, datetime.now(UTC), "x") is None


async def test_bad_api_base_is_a_hard_sending_error(http: httpx.AsyncClient) -> None:
    provider = TwilioProvider(
        http, account_sid="AC1", auth_token="t", from_number="+1", api_base="ftp://twilio"
    )
    result = await provider.send(message())
    assert result.outcome is Outcome.hard
    assert result.classification == Classification("sending_error", False)


async def test_read_timeout_is_outcome_unknown_then_found(
    fake_twilio: FakeTwilio,
) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.1, connect=1.0), trust_env=False) as http:
        provider = TwilioProvider(
            http,
            account_sid=fake_twilio.account_sid,
            auth_token=fake_twilio.auth_token,
            from_number=fake_twilio.from_number,
            api_base=fake_twilio.url,
        )
        since = datetime.now(UTC)
        fake_twilio.script(TO, Answer.slow(0.3, created=True))
        result = await provider.send(message())
        assert result.outcome is Outcome.soft
        assert result.outcome_unknown
        assert result.error_message is not None and "ReadTimeout" in result.error_message

        # The fake created it anyway: ask before sending again.
        for _ in range(50):
            if fake_twilio.messages:
                break
            await asyncio.sleep(0.05)
        sid = await provider.find_sent(TO, since, message().body)
        assert sid == fake_twilio.messages[-1]["sid"]
        assert fake_twilio.sends_to(TO) == 1


async def test_500_that_created_the_message_is_found(
    twilio: TwilioProvider, fake_twilio: FakeTwilio
) -> None:
    since = datetime.now(UTC)
    fake_twilio.script(TO, Answer.server_error(created=True))
    result = await twilio.send(message())
    assert result.outcome_unknown
    assert await twilio.find_sent(TO, since, message().body) == fake_twilio.messages[-1]["sid"]


async def test_find_sent_matches_number_body_direction_and_time(
    twilio: TwilioProvider, fake_twilio: FakeTwilio
) -> None:
    now = datetime.now(UTC)
    body = "Reminder: school closes at noon"
    fake_twilio.add_message(TO, body, created_at=now - timedelta(minutes=10))  # too old
    fake_twilio.add_message(TO, "another text", created_at=now)
    fake_twilio.add_message(TO, body, created_at=now, direction="inbound")
    fake_twilio.add_message("+14155550999", body, created_at=now)
    assert await twilio.find_sent(TO, now - timedelta(seconds=1), body) is None

    wanted = fake_twilio.add_message(TO, body, created_at=now + timedelta(seconds=1))
    assert await twilio.find_sent(TO, now, body) == wanted
    query = fake_twilio.list_requests[-1]
    assert query["To"] == TO
    # No DateSent filter: a message still queued at Twilio has no date_sent yet.
    assert "DateSent>=" not in query


async def test_find_sent_follows_next_page_uri(
    twilio: TwilioProvider, fake_twilio: FakeTwilio
) -> None:
    now = datetime.now(UTC)
    body = "Picture day tomorrow"
    wanted = fake_twilio.add_message(TO, body, created_at=now)
    for i in range(150):  # newer messages to the same number push it to page two
        fake_twilio.add_message(TO, f"other {i}", created_at=now + timedelta(seconds=1))
    assert await twilio.find_sent(TO, now, body) == wanted
    assert len(fake_twilio.list_requests) == 2
    assert fake_twilio.list_requests[1]["Page"] == "1"


async def test_find_sent_is_none_when_twilio_refuses(
    http: httpx.AsyncClient, fake_twilio: FakeTwilio
) -> None:
    fake_twilio.add_message(TO, "hi", created_at=datetime.now(UTC))
    provider = TwilioProvider(
        http,
        account_sid=fake_twilio.account_sid,
        auth_token="wrong",
        from_number=fake_twilio.from_number,
        api_base=fake_twilio.url,
    )
    assert await provider.find_sent(TO, datetime.now(UTC) - timedelta(minutes=1), "hi") is None


async def test_sends_are_counted_per_number(
    twilio: TwilioProvider, fake_twilio: FakeTwilio
) -> None:
    other = "+14155550124"
    fake_twilio.always(other, Answer.error(21211))
    for _ in range(3):
        await twilio.send(message())
    for _ in range(2):
        result = await twilio.send(message(to=other))
        assert result.classification is not None
        assert result.classification.reason == "invalid_number"
    assert fake_twilio.sends_to(TO) == 3
    assert fake_twilio.sends_to(other) == 2


async def test_find_sent_skips_excluded_and_stops_at_older_pages(
    twilio: TwilioProvider, fake_twilio: FakeTwilio
) -> None:
    now = datetime.now(UTC)
    body = "Early dismissal at 1pm"
    first = fake_twilio.add_message(TO, body, created_at=now + timedelta(seconds=1))
    second = fake_twilio.add_message(TO, body, created_at=now + timedelta(seconds=2))
    assert await twilio.find_sent(TO, now, body) == second
    assert await twilio.find_sent(TO, now, body, exclude={second}) == first
    assert await twilio.find_sent(TO, now, body, exclude={first, second}) is None

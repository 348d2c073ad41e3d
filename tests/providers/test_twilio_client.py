"""TwilioProvider against the fake Twilio server on loopback."""

from __future__ import annotations

import asyncio
import email.utils
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.providers.base import Lookup, LookupAnswer, OutboundMessage, Provider
from app.providers.twilio.client import TwilioProvider
from app.providers.twilio.events import parse_status_callback
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
        (21401, Outcome.hard, "sending_error", 0),  # the sender (docs/providers.md §1.5)
        (21610, Outcome.hard, "opted_out", 0),
        (21408, Outcome.hard, "international_number", 0),
        (21612, Outcome.hard, "unreachable_number", 1),  # no SMS route (docs/providers.md §1.5)
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
    # Nor does the lookup raise: it cannot tell.
    found = await provider.find_sent(TO, datetime.now(UTC), "x")
    assert found.answer is LookupAnswer.cant_tell


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
        found = await provider.find_sent(TO, since, message().body)
        assert found == Lookup.sent(fake_twilio.messages[-1]["sid"])
        assert fake_twilio.sends_to(TO) == 1


async def test_500_that_created_the_message_is_found(
    twilio: TwilioProvider, fake_twilio: FakeTwilio
) -> None:
    since = datetime.now(UTC)
    fake_twilio.script(TO, Answer.server_error(created=True))
    result = await twilio.send(message())
    assert result.outcome_unknown
    found = await twilio.find_sent(TO, since, message().body)
    assert found == Lookup.sent(fake_twilio.messages[-1]["sid"])


async def test_find_sent_matches_number_body_direction_and_time(
    twilio: TwilioProvider, fake_twilio: FakeTwilio
) -> None:
    now = datetime.now(UTC)
    body = "Reminder: school closes at noon"
    fake_twilio.add_message(TO, body, created_at=now - timedelta(minutes=10))  # too old
    fake_twilio.add_message(TO, "another text", created_at=now)
    fake_twilio.add_message(TO, body, created_at=now, direction="inbound")
    fake_twilio.add_message("+14155550999", body, created_at=now)
    fake_twilio.add_message(TO, body, created_at=now, from_number="+15005550001")  # not ours
    assert await twilio.find_sent(TO, now - timedelta(seconds=1), body) == Lookup.not_sent()

    wanted = fake_twilio.add_message(TO, body, created_at=now + timedelta(seconds=1))
    assert await twilio.find_sent(TO, now, body) == Lookup.sent(wanted)
    query = fake_twilio.list_requests[-1]
    assert (query["To"], query["From"]) == (TO, fake_twilio.from_number)
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
    fake_twilio.max_page_size = 100
    assert await twilio.find_sent(TO, now, body) == Lookup.sent(wanted)
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
    found = await provider.find_sent(TO, datetime.now(UTC) - timedelta(minutes=1), "hi")
    assert found.answer is LookupAnswer.cant_tell


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


async def test_find_sent_skips_excluded_messages(
    twilio: TwilioProvider, fake_twilio: FakeTwilio
) -> None:
    now = datetime.now(UTC)
    body = "Early dismissal at 1pm"
    first = fake_twilio.add_message(TO, body, created_at=now + timedelta(seconds=1))
    second = fake_twilio.add_message(TO, body, created_at=now + timedelta(seconds=2))
    assert await twilio.find_sent(TO, now, body) == Lookup.sent(second)
    assert await twilio.find_sent(TO, now, body, exclude={second}) == Lookup.sent(first)
    assert await twilio.find_sent(TO, now, body, exclude={first, second}) == Lookup.not_sent()


def small_pages(http: httpx.AsyncClient, fake: FakeTwilio, **extra: Any) -> TwilioProvider:
    return TwilioProvider(
        http,
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        from_number=fake.from_number,
        api_base=fake.url,
        page_size=20,
        **extra,
    )


@pytest.mark.parametrize("placement", ["first", "last"])
async def test_a_queued_message_is_found_wherever_the_list_puts_it(
    http: httpx.AsyncClient, fake_twilio: FakeTwilio, placement: str
) -> None:
    """Twilio sorts by date_sent, newest first, and a message in its queue has none
    (https://www.twilio.com/docs/messaging/api/message-resource#read-multiple-message-resources):
    behind 30+ older messages on pages of 20, the queued one is found on the last page,
    or on the first, and no page is skipped because its messages are older."""
    fake_twilio.queued_placement = placement
    now = datetime.now(UTC)
    body = "Picture day tomorrow"
    for i in range(35):
        fake_twilio.add_message(TO, f"older {i}", created_at=now - timedelta(days=40 - i))
    wanted = fake_twilio.add_message(TO, body, created_at=now, status="queued")
    [queued] = [m for m in fake_twilio.messages if m["sid"] == wanted]
    assert queued["date_sent"] is None

    found = await small_pages(http, fake_twilio).find_sent(TO, now, body)

    assert found == Lookup.sent(wanted)
    pages = len(fake_twilio.list_requests)
    assert pages == (1 if placement == "first" else 2)
    assert all(q.get("PageSize", "20") == "20" for q in fake_twilio.list_requests)


async def test_not_sent_only_once_the_whole_list_was_read(
    http: httpx.AsyncClient, fake_twilio: FakeTwilio
) -> None:
    now = datetime.now(UTC)
    for i in range(45):
        fake_twilio.add_message(TO, f"older {i}", created_at=now - timedelta(days=50 - i))
    assert await small_pages(http, fake_twilio).find_sent(TO, now, "hi") == Lookup.not_sent()
    assert len(fake_twilio.list_requests) == 3
    assert fake_twilio.list_requests[-1]["Page"] == "2"


async def test_a_page_cap_reached_cannot_tell(
    http: httpx.AsyncClient, fake_twilio: FakeTwilio
) -> None:
    now = datetime.now(UTC)
    for i in range(45):
        fake_twilio.add_message(TO, f"older {i}", created_at=now - timedelta(days=50 - i))
    found = await small_pages(http, fake_twilio, max_pages=2).find_sent(TO, now, "hi")
    assert found.answer is LookupAnswer.cant_tell
    assert len(fake_twilio.list_requests) == 2


@pytest.mark.parametrize(
    "failure",
    [Answer.throttled(), Answer.server_error(), Answer.server_error(503)],
    ids=["429", "500", "503"],
)
@pytest.mark.parametrize("on_page", [0, 1])
async def test_a_failed_page_cannot_tell(
    http: httpx.AsyncClient, fake_twilio: FakeTwilio, failure: Answer, on_page: int
) -> None:
    now = datetime.now(UTC)
    for i in range(25):
        fake_twilio.add_message(TO, f"older {i}", created_at=now - timedelta(days=30 - i))
    if on_page:
        fake_twilio.script_list(Answer(status=200))
    fake_twilio.script_list(failure)
    found = await small_pages(http, fake_twilio).find_sent(TO, now, "hi")
    assert found.answer is LookupAnswer.cant_tell
    assert len(fake_twilio.list_requests) == on_page + 1


async def test_a_lookup_timing_out_cannot_tell(fake_twilio: FakeTwilio) -> None:
    fake_twilio.script_list(Answer(status=200, delay=0.5))
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.1), trust_env=False) as http:
        found = await small_pages(http, fake_twilio).find_sent(TO, datetime.now(UTC), "hi")
    assert found.answer is LookupAnswer.cant_tell


async def test_a_messaging_service_lookup_matches_the_service(
    http: httpx.AsyncClient, fake_twilio: FakeTwilio
) -> None:
    """The list has no MessagingServiceSid filter (twilio-oai ListMessage): the service's
    messages are told apart by their `messaging_service_sid`, `from` unset while queued."""
    service = "MG" + "1" * 32
    provider = TwilioProvider(
        http,
        account_sid=fake_twilio.account_sid,
        auth_token=fake_twilio.auth_token,
        messaging_service_sid=service,
        api_base=fake_twilio.url,
    )
    now = datetime.now(UTC)
    body = "Bus 12 is late"
    fake_twilio.add_message(TO, body, created_at=now, messaging_service_sid="MG" + "2" * 32)
    assert await provider.find_sent(TO, now, body) == Lookup.not_sent()
    assert "From" not in fake_twilio.list_requests[-1]
    result = await provider.send(OutboundMessage(TO, body))
    assert result.provider_message_id is not None
    assert await provider.find_sent(TO, now, body) == Lookup.sent(result.provider_message_id)


async def test_fetch_one_message(http: httpx.AsyncClient, fake_twilio: FakeTwilio) -> None:
    """`GET .../Messages/{sid}.json` (twilio-oai FetchMessage): the message, date_sent null
    while queued; 404 with code 20404 for a sid it does not hold."""
    sid = fake_twilio.add_message(TO, "hi", status="queued")
    base = f"{fake_twilio.url}/2010-04-01/Accounts/{fake_twilio.account_sid}/Messages"
    response = await http.get(f"{base}/{sid}.json", auth=fake_twilio.auth)
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["date_sent"]) == ("queued", None)
    fake_twilio.mark_sent(sid, "delivered")
    response = await http.get(f"{base}/{sid}.json", auth=fake_twilio.auth)
    assert response.json()["status"] == "delivered"
    assert response.json()["date_sent"] is not None
    missing = await http.get(f"{base}/SM{'0' * 32}.json", auth=fake_twilio.auth)
    assert (missing.status_code, missing.json()["code"]) == (404, 20404)


async def test_fetch_status_answers_the_message_s_status_as_its_callback_would(
    twilio: TwilioProvider, fake_twilio: FakeTwilio
) -> None:
    """`fetch_status` (README): the status and error code Twilio holds, as the very
    receipt a status callback of them is (its event id too: the two are one event)."""
    result = await twilio.send(message())
    sid = result.provider_message_id
    assert sid is not None
    queued = await twilio.fetch_status(sid)
    assert queued.receipt == parse_status_callback({"MessageSid": sid, "MessageStatus": "queued"})
    fake_twilio.mark_sent(sid, "undelivered", error_code=30003)
    fetched = await twilio.fetch_status(sid)
    callback = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "30003"}
    assert fetched.receipt == parse_status_callback(callback)
    assert fetched.receipt.classification == Classification("unreachable_number", False)
    fake_twilio.mark_sent(sid, "sent")
    sent = await twilio.fetch_status(sid)
    assert sent.receipt is not None
    assert (sent.receipt.provider_status, sent.receipt.error_code) == ("sent", None)
    assert fake_twilio.fetches == [sid] * 3


@pytest.mark.parametrize(
    "answer",
    [
        Answer.throttled(),
        Answer.server_error(500),
        Answer.server_error(503),
        Answer.slow(5.0),  # past the client's 2 s read timeout
    ],
    ids=["429", "500", "503", "timeout"],
)
async def test_fetch_status_cannot_tell_when_twilio_does_not_answer(
    twilio: TwilioProvider, fake_twilio: FakeTwilio, answer: Answer
) -> None:
    sid = fake_twilio.add_message(TO, "hi", status="sent")
    fake_twilio.script_fetch(answer)
    fetched = await twilio.fetch_status(sid)
    assert fetched.receipt is None and fetched.why
    assert (await twilio.fetch_status(sid)).receipt is not None  # the next one answers


async def test_fetch_status_of_an_unknown_sid_cannot_tell(
    twilio: TwilioProvider, fake_twilio: FakeTwilio
) -> None:
    """404 (20404): a deleted message, or another account's: nothing about delivery."""
    fetched = await twilio.fetch_status("SM" + "0" * 32)
    assert fetched.receipt is None
    assert fetched.why == "fetching the message answered HTTP 404"

"""The fake Twilio's status callbacks (tests/fakes/twilio.py), against a real receiver.

The receiver is a small Starlette app served by uvicorn on loopback. It rebuilds the URL it
was called at as the service does (`app.webhooks.common.public_url`: its base, the path, the
query string exactly as sent) and checks each callback's `X-Twilio-Signature` with the
project's verifier (`app.providers.twilio.signature`), so a callback that verifies here is
one the service's webhook would take.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.providers.base import OutboundMessage
from app.providers.twilio.client import TwilioProvider
from app.providers.twilio.events import parse_status_callback
from app.providers.twilio.signature import HEADER, validate_signature, verify_signature
from app.sending.outcomes import Outcome
from app.webhooks.common import public_url
from tests.fakes.twilio import Answer, FakeTwilio, Life, Step

TO = "+14155550123"
PATH = "/v1/webhooks/twilio/status"
QUERY = "attempt=123-abcd"
# What Twilio posts for a status, and no more (docs/providers.md §1.3).
FIELDS = {"ApiVersion", "AccountSid", "From", "To", "MessageSid", "SmsSid"}
FIELDS |= {"MessageStatus", "SmsStatus"}


@dataclass
class Received:
    url: str  # as rebuilt by the receiver: base + path + query string as sent
    content_type: str
    signature: str | None
    form: list[tuple[str, str]]
    seen: Any = None  # what `Receiver.observe` found when the callback arrived

    @property
    def values(self) -> dict[str, str]:
        return dict(self.form)

    @property
    def status(self) -> str:
        return self.values["MessageStatus"]


@dataclass
class Receiver:
    """A status callback endpoint on loopback that records what it receives."""

    answer: int = 200
    received: list[Received] = field(default_factory=list)
    observe: Callable[[dict[str, str]], Awaitable[Any]] | None = None
    port: int = 0
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The StatusCallback to give: a path and a query string, as the service's has."""
        return f"{self.base}{PATH}?{QUERY}"

    async def _receive(self, request: Request) -> Response:
        form = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True)
        seen = await self.observe(dict(form)) if self.observe else None
        self.received.append(
            Received(
                public_url(request, self.base),
                request.headers.get("content-type", ""),
                request.headers.get(HEADER),
                form,
                seen,
            )
        )
        return Response(status_code=self.answer)

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[Route(PATH, self._receive, methods=["POST"])])
        config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            assert not self._task.done(), "the receiver stopped at start-up"
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task

    def statuses(self) -> list[str]:
        return [r.status for r in self.received]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


def message(receiver: Receiver, to: str = TO) -> OutboundMessage:
    return OutboundMessage(to=to, body="Hello from Lincoln High", status_callback=receiver.url)


async def sent_sid(twilio: TwilioProvider, receiver: Receiver, to: str = TO) -> str:
    result = await twilio.send(message(receiver, to))
    assert result.outcome is Outcome.accepted, result
    assert result.provider_message_id is not None
    return result.provider_message_id


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Let the fake and the receiver work until the condition holds (at most `within` s)."""
    for _ in range(int(within / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")


async def fetched(fake: FakeTwilio, sid: str) -> dict[str, Any]:
    """The message as `GET .../Messages/{sid}.json` shows it."""
    url = f"{fake.url}/2010-04-01/Accounts/{fake.account_sid}/Messages/{sid}.json"
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(url, auth=fake.auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def listed(fake: FakeTwilio, to: str) -> list[dict[str, Any]]:
    url = f"{fake.url}/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(url, params={"To": to}, auth=fake.auth)
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


# -- what Twilio posts, and how it signs it ------------------------------------------------


async def test_delivered_message_posts_sent_then_delivered_signed_over_the_full_url(
    twilio: TwilioProvider, fake_twilio: FakeTwilio, receiver: Receiver
) -> None:
    fake_twilio.callbacks = True
    sid = await sent_sid(twilio, receiver)
    await fake_twilio.settled()

    assert receiver.statuses() == ["sent", "delivered"]
    for received in receiver.received:
        assert received.url == receiver.url  # the query string reached the receiver intact
        assert received.content_type == "application/x-www-form-urlencoded"
        assert {name for name, _ in received.form} == FIELDS  # no ErrorCode when delivered
        values = received.values
        assert values["MessageSid"] == values["SmsSid"] == sid
        assert values["MessageStatus"] == values["SmsStatus"]
        assert values["AccountSid"] == fake_twilio.account_sid
        assert (values["From"], values["To"]) == (fake_twilio.from_number, TO)
        assert values["ApiVersion"] == "2010-04-01"
        # The project's verifier takes it over the full URL, query string included...
        verify_signature(received.url, received.form, received.signature, fake_twilio.auth_token)
        # ...and only over that URL, with that token: the query string is signed.
        without_query = received.url.partition("?")[0]
        assert not validate_signature(
            without_query, received.form, received.signature, fake_twilio.auth_token
        )
        assert not validate_signature(received.url, received.form, received.signature, "x")
        # And the service reads it as a receipt of this message.
        receipt = parse_status_callback(received.form)
        assert (receipt.provider_message_id, receipt.error_code) == (sid, None)

    assert [(p.sid, p.status, p.url, p.answer) for p in fake_twilio.posted] == [
        (sid, "sent", receiver.url, 200),
        (sid, "delivered", receiver.url, 200),
    ]
    assert [p.signature for p in fake_twilio.posted] == [r.signature for r in receiver.received]
    assert fake_twilio.posted_for(sid) == fake_twilio.posted
    message = await fetched(fake_twilio, sid)
    assert (message["status"], message["error_code"]) == ("delivered", None)
    assert message["date_sent"] is not None


@pytest.mark.parametrize(
    ("life", "statuses", "code"),
    [
        (Life.undelivered(30003), ["sent", "undelivered"], 30003),
        (Life.undelivered(30007), ["sent", "undelivered"], 30007),
        (Life.failed(30008), ["failed"], 30008),
    ],
)
async def test_failure_carries_its_error_code(
    twilio: TwilioProvider,
    fake_twilio: FakeTwilio,
    receiver: Receiver,
    life: Life,
    statuses: list[str],
    code: int,
) -> None:
    fake_twilio.callbacks = life
    sid = await sent_sid(twilio, receiver)
    await fake_twilio.settled()

    assert receiver.statuses() == statuses
    *before, last = receiver.received
    assert all("ErrorCode" not in r.values for r in before)
    assert last.values["ErrorCode"] == str(code)
    assert {name for name, _ in last.form} == FIELDS | {"ErrorCode"}
    verify_signature(last.url, last.form, last.signature, fake_twilio.auth_token)
    assert parse_status_callback(last.form).error_code == str(code)
    message = await fetched(fake_twilio, sid)
    assert (message["status"], message["error_code"]) == (statuses[-1], code)


async def test_messaging_service_message_calls_back_queued_first(
    http: httpx.AsyncClient, fake_twilio: FakeTwilio, receiver: Receiver
) -> None:
    service = "MG" + "a" * 32
    twilio = TwilioProvider(
        http,
        account_sid=fake_twilio.account_sid,
        auth_token=fake_twilio.auth_token,
        messaging_service_sid=service,
        api_base=fake_twilio.url,
    )
    fake_twilio.callbacks = True
    result = await twilio.send(message(receiver))
    assert result.provider_status == "accepted"  # the initial status: no callback for it
    await fake_twilio.settled()

    assert receiver.statuses() == ["queued", "sent", "delivered"]
    for received in receiver.received:
        assert received.values["MessagingServiceSid"] == service
        assert received.values["From"] == fake_twilio.from_number  # the sender it picked
        verify_signature(received.url, received.form, received.signature, fake_twilio.auth_token)


# -- the stored status follows ----------------------------------------------------------


async def test_fetch_and_list_show_each_status_as_its_callback_arrives(
    twilio: TwilioProvider, fake_twilio: FakeTwilio, receiver: Receiver
) -> None:
    async def look(form: dict[str, str]) -> tuple[str, bool, str]:
        message = await fetched(fake_twilio, form["MessageSid"])
        [in_list] = await listed(fake_twilio, TO)
        return message["status"], message["date_sent"] is not None, in_list["status"]

    receiver.observe = look
    # Both steps due at once: each status is taken just before its own callback goes out,
    # and the next one waits for that callback's answer.
    fake_twilio.callbacks = Life.undelivered(30003)
    sid = await sent_sid(twilio, receiver)
    await fake_twilio.settled()

    assert [(r.status, r.seen) for r in receiver.received] == [
        ("sent", ("sent", True, "sent")),
        ("undelivered", ("undelivered", True, "undelivered")),
    ]
    assert fake_twilio.status_of(sid) == "undelivered"


# -- Twilio's unkind parts: late, repeated, lost ------------------------------------------


async def test_callbacks_out_of_order_and_repeated(
    twilio: TwilioProvider, fake_twilio: FakeTwilio, receiver: Receiver
) -> None:
    async def look(form: dict[str, str]) -> str:
        return fake_twilio.status_of(form["MessageSid"])

    receiver.observe = look
    # `sent`'s callback is late: `delivered`'s overtakes it, and comes twice.
    fake_twilio.callbacks = Life.delivered().late("sent", 0.2).repeat("delivered")
    sid = await sent_sid(twilio, receiver)
    await fake_twilio.settled()

    assert receiver.statuses() == ["delivered", "delivered", "sent"]
    assert [r.seen for r in receiver.received] == ["delivered"] * 3  # Twilio moved on
    assert [p.status for p in fake_twilio.posted_for(sid)] == ["delivered", "delivered", "sent"]
    for received in receiver.received:
        verify_signature(received.url, received.form, received.signature, fake_twilio.auth_token)
    # Repeats are the same callback: the same form, the same signature, the same receipt.
    first, second, _ = receiver.received
    assert (first.form, first.signature) == (second.form, second.signature)
    assert parse_status_callback(first.form) == parse_status_callback(second.form)
    assert (await fetched(fake_twilio, sid))["status"] == "delivered"


async def test_lost_callbacks_are_never_posted_but_the_status_moves(
    twilio: TwilioProvider, fake_twilio: FakeTwilio, receiver: Receiver
) -> None:
    fake_twilio.script_life(TO, Life.delivered().lose("sent"), Life.sent().lose("sent"))
    first = await sent_sid(twilio, receiver)
    second = await sent_sid(twilio, receiver)
    await fake_twilio.settled()

    assert [(r.values["MessageSid"], r.status) for r in receiver.received] == [(first, "delivered")]
    assert [(p.sid, p.status) for p in fake_twilio.posted] == [(first, "delivered")]
    assert (await fetched(fake_twilio, first))["status"] == "delivered"
    second_message = await fetched(fake_twilio, second)
    assert second_message["status"] == "sent"  # nobody was told
    assert second_message["date_sent"] is not None


def test_life_helpers_change_one_step() -> None:
    life = Life.undelivered(30003, every=0.5).late("sent", 2).repeat("undelivered", 3)
    assert life.steps == (
        Step("sent", after=0.5, late=2),
        Step("undelivered", 30003, after=0.5, copies=3),
    )
    assert Life().steps == Life.delivered().steps == (Step("sent"), Step("delivered"))
    assert Life.failed().lose("failed").steps == (Step("failed", 30008, copies=0),)
    with pytest.raises(ValueError, match="delivered"):
        Life.failed().lose("delivered")


# -- what decides whether a message has a life ------------------------------------------


async def test_no_callbacks_unless_asked(
    twilio: TwilioProvider, fake_twilio: FakeTwilio, receiver: Receiver
) -> None:
    sid = await sent_sid(twilio, receiver)
    await fake_twilio.settled()
    await asyncio.sleep(0.05)
    assert receiver.received == [] and fake_twilio.posted == []
    assert (await fetched(fake_twilio, sid))["status"] == "queued"  # as before: mark_sent


async def test_script_life_is_per_number_then_the_default(
    twilio: TwilioProvider, fake_twilio: FakeTwilio, receiver: Receiver
) -> None:
    other = "+14155550124"
    fake_twilio.callbacks = Life.sent()
    fake_twilio.script_life(TO, Life.failed(30008), Life.silent())
    sids = [await sent_sid(twilio, receiver, to) for to in (TO, TO, TO, other)]
    await fake_twilio.settled()

    assert [(p.sid, p.status) for p in fake_twilio.posted] == [
        (sids[0], "failed"),
        (sids[2], "sent"),
        (sids[3], "sent"),
    ]
    assert [fake_twilio.status_of(sid) for sid in sids] == ["failed", "queued", "sent", "sent"]


async def test_a_refused_create_has_no_life(
    twilio: TwilioProvider, fake_twilio: FakeTwilio, receiver: Receiver
) -> None:
    fake_twilio.callbacks = True
    fake_twilio.script(TO, Answer.error(21211), Answer.throttled())
    for _ in range(2):
        assert (await twilio.send(message(receiver))).outcome is not Outcome.accepted
    await fake_twilio.settled()
    assert fake_twilio.messages == [] and receiver.received == []


async def test_without_a_status_callback_the_status_moves_and_nothing_is_posted(
    twilio: TwilioProvider, fake_twilio: FakeTwilio
) -> None:
    fake_twilio.callbacks = Life.undelivered(30005)
    result = await twilio.send(OutboundMessage(to=TO, body="Hi"))
    assert result.provider_message_id is not None
    await fake_twilio.settled()
    assert fake_twilio.posted == []
    assert fake_twilio.status_of(result.provider_message_id) == "undelivered"


# -- an answer lost, the message accepted all the same ----------------------------------


@pytest.fixture
async def impatient(fake_twilio: FakeTwilio) -> AsyncIterator[TwilioProvider]:
    """A provider whose client gives up on an answer after 0.2 s."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.2), trust_env=False) as client:
        yield TwilioProvider(
            client,
            account_sid=fake_twilio.account_sid,
            auth_token=fake_twilio.auth_token,
            from_number=fake_twilio.from_number,
            api_base=fake_twilio.url,
        )


async def test_lost_answer_still_calls_back(
    impatient: TwilioProvider, fake_twilio: FakeTwilio, receiver: Receiver
) -> None:
    fake_twilio.callbacks = True
    fake_twilio.script(TO, Answer.lost(delay=30))
    result = await impatient.send(message(receiver))
    assert result.outcome_unknown and result.provider_message_id is None
    # The answer is still held, and the message went its way meanwhile.
    [held] = await listed(fake_twilio, TO)
    await until(lambda: len(receiver.received) >= 2)
    assert receiver.statuses() == ["sent", "delivered"]
    assert {r.values["MessageSid"] for r in receiver.received} == {held["sid"]}
    for received in receiver.received:
        verify_signature(received.url, received.form, received.signature, fake_twilio.auth_token)
    assert fake_twilio.status_of(held["sid"]) == "delivered"


async def test_slow_or_hanging_answer_calls_back_once_the_message_is_accepted(
    impatient: TwilioProvider, fake_twilio: FakeTwilio, receiver: Receiver
) -> None:
    fake_twilio.callbacks = True
    fake_twilio.script(TO, Answer.slow(0.4, created=True))
    release = asyncio.Event()
    fake_twilio.hang("+14155550124", release)

    slow = await impatient.send(message(receiver))
    hung = await impatient.send(message(receiver, "+14155550124"))
    assert slow.outcome_unknown and hung.outcome_unknown
    release.set()
    await until(lambda: len(fake_twilio.messages) >= 2)
    await fake_twilio.settled()

    by_number: dict[str, list[str]] = {}
    for received in receiver.received:
        by_number.setdefault(received.values["To"], []).append(received.status)
    assert by_number == {TO: ["sent", "delivered"], "+14155550124": ["sent", "delivered"]}


# -- answers recorded, posted once, cancelled on stop -----------------------------------


async def test_each_callback_is_posted_once_and_its_answer_recorded(
    twilio: TwilioProvider, fake_twilio: FakeTwilio, receiver: Receiver
) -> None:
    receiver.answer = 500
    fake_twilio.callbacks = Life.sent()
    sid = await sent_sid(twilio, receiver)
    await fake_twilio.settled()
    assert [(p.status, p.answer, p.error) for p in fake_twilio.posted_for(sid)] == [
        ("sent", 500, None)
    ]
    assert receiver.statuses() == ["sent"]  # no retry


async def test_nobody_listening_is_recorded_as_no_answer(
    twilio: TwilioProvider, fake_twilio: FakeTwilio
) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fake_twilio.callbacks = Life.sent()
    result = await twilio.send(
        OutboundMessage(to=TO, body="Hi", status_callback=f"http://127.0.0.1:{port}{PATH}")
    )
    await fake_twilio.settled()
    [posted] = fake_twilio.posted
    assert (posted.sid, posted.answer) == (result.provider_message_id, None)
    assert posted.error is not None and "ConnectError" in posted.error


async def test_stop_cancels_the_lives_under_way(receiver: Receiver) -> None:
    async with FakeTwilio(callbacks=Life.delivered().late("delivered", 30)) as fake:
        async with httpx.AsyncClient(trust_env=False) as client:
            twilio = TwilioProvider(
                client,
                account_sid=fake.account_sid,
                auth_token=fake.auth_token,
                from_number=fake.from_number,
                api_base=fake.url,
            )
            sid = await sent_sid(twilio, receiver)
        await until(lambda: bool(fake.posted))
        [task] = fake._lives
        started = asyncio.get_running_loop().time()
    # Stopped at once, not 30 s later; the late `delivered` never went out.
    assert asyncio.get_running_loop().time() - started < 5
    assert task.cancelled() and not fake._lives
    assert fake.status_of(sid) == "delivered"
    assert receiver.statuses() == ["sent"]
    assert [p.status for p in fake.posted] == ["sent"]

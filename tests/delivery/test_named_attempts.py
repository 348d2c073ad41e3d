"""Every message's status callback names its attempt (app.providers.callbacks): a receipt that
names it settles the attempt even when the create call's answer was lost, teaches the
attempt its message id, and tells a recovery that the message went out, so nothing is sent
twice, whatever the provider's lookup can tell. The real Engine and the Twilio webhook
(through the app), against the fake Twilio on loopback; nothing of Campanile's is patched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import urlsplit

import httpx
import pytest

from app.config import Settings
from app.delivery.engine import Engine
from app.kit.crypto import SecretBox
from app.providers.base import Receipt
from app.providers.registry import Registry
from tests.fakes.twilio import Answer, CreateRequest
from tests.support.api import apply_receipts
from tests.support.delivery import (
    Sessions,
    TimedFakeTwilio,
    TwilioSchool,
    attempt_holding,
    launch,
    make_due,
    named_in,
    one,
    phone,
)
from tests.support.webhooks import TwilioAccount, post_twilio, status_form


@pytest.fixture
async def impatient(sessionmaker: Sessions, settings: Settings) -> AsyncIterator[Engine]:
    """The engine with a client that gives up on an answer after 0.15 s."""
    assert settings.secret_key

    async def no_simulator(receipt: Receipt) -> None:
        raise AssertionError("the simulator is not used here")

    async with httpx.AsyncClient(timeout=httpx.Timeout(0.15, connect=1.0), trust_env=False) as http:
        registry = Registry(
            http, SecretBox(settings.secret_key), settings.public_base_url, no_simulator
        )
        yield Engine(sessionmaker, settings, registry)


async def twilio_calls_back(
    client: httpx.AsyncClient, twilio: TimedFakeTwilio, request: CreateRequest, *statuses: str
) -> None:
    """Twilio posts the message's status callbacks to the URL given with it (query and
    all), signed with the account's auth token: through the app's webhook."""
    assert request.status_callback is not None
    url = urlsplit(request.status_callback)
    account = TwilioAccount(twilio.account_sid, twilio.auth_token, twilio.from_number)
    sid = twilio.sid_to(request.to or "")
    for status in statuses:
        form = status_form(account, sid, status)
        response = await post_twilio(client, url.path, form, account.auth_token, query=url.query)
        assert response.status_code == 200, response.text


async def until_accepted(twilio: TimedFakeTwilio, count: int) -> None:
    for _ in range(500):
        if len(twilio.messages) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the fake never accepted the message")


async def test_a_lost_answer_is_settled_by_the_receipts_that_name_the_attempt(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    impatient: Engine,
    sessionmaker: Sessions,
) -> None:
    """Twilio accepts the message but its answer never reaches us, and its list cannot
    tell (429s) either: the callbacks, which name the attempt, settle it. It ends Delivered
    with its message id, and nothing is sent twice."""
    auth = twilio_school.auth
    number = phone(0)
    twilio.script(number, Answer.lost(delay=2.0))
    twilio.script_list(*[Answer.throttled("1")] * 20)
    cid = await launch(client, twilio_school, number)

    assert await impatient.run_once() == 1
    await until_accepted(twilio, 1)
    recipient = await one(client, auth, cid, number)
    assert recipient["status"] == "scheduled"  # the answer was lost: retried, after asking
    [attempt] = recipient["attempts_history"]
    assert (attempt["status"], attempt["provider_message_id"]) == ("unknown", None)

    [request] = twilio.requests
    await twilio_calls_back(client, twilio, request, "sent", "delivered")
    await apply_receipts(sessionmaker)

    recipient = await one(client, auth, cid, number)
    assert (recipient["status"], recipient["delivery_confirmed"]) == ("delivered", True)
    assert recipient["next_attempt_at"] is None
    [attempt] = recipient["attempts_history"]
    sid = twilio.sid_to(number)
    assert (attempt["status"], attempt["provider_message_id"]) == ("delivered", sid)
    assert named_in(request.status_callback, impatient.registry.names) == await attempt_holding(
        sessionmaker, sid
    )
    await make_due(sessionmaker, cid)
    assert await impatient.run_once() == 0
    assert len(twilio.messages) == 1
    assert twilio.list_requests == []  # never needed to ask


async def test_a_crashed_hand_over_named_by_a_receipt_is_not_sent_again(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    """The worker sent the message and died before recording it; the message's first
    callback came meanwhile (it waits: no attempt holds its id yet). When the lease runs out,
    the recovery learns from that receipt that the message went out, as which message, and
    sends nothing, without asking Twilio; then the receipts apply."""
    auth = twilio_school.auth
    number = phone(0)
    twilio.script_list(*[Answer.server_error()] * 20)  # the lookup could not tell anyway
    cid = await launch(client, twilio_school, number)
    await delivery.send(await delivery.claim(), asyncio.Event())  # and the worker died
    [request] = twilio.requests
    await twilio_calls_back(client, twilio, request, "sent")
    assert await apply_receipts(sessionmaker) == []  # waiting for its attempt

    await make_due(sessionmaker, cid)  # the lease runs out
    assert await delivery.run_once() == 1

    assert len(twilio.requests) == 1
    assert twilio.list_requests == []
    await apply_receipts(sessionmaker)
    recipient = await one(client, auth, cid, number)
    assert recipient["status"] == "pending"
    [attempt] = recipient["attempts_history"]
    assert (attempt["status"], attempt["provider_message_id"]) == ("sent", twilio.sid_to(number))
    await twilio_calls_back(client, twilio, request, "delivered")
    await apply_receipts(sessionmaker)
    assert (await one(client, auth, cid, number))["status"] == "delivered"


async def test_a_name_we_did_not_make_names_nothing(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    impatient: Engine,
    sessionmaker: Sessions,
) -> None:
    """A callback signed by a school's own account but naming an attempt with a tag we did
    not make (another school's attempt, guessed): stored by its message id only, it settles
    no attempt."""
    auth = twilio_school.auth
    number = phone(0)
    twilio.script(number, Answer.lost(delay=2.0))
    cid = await launch(client, twilio_school, number)
    assert await impatient.run_once() == 1
    await until_accepted(twilio, 1)
    [request] = twilio.requests
    assert request.status_callback is not None
    last = request.status_callback[-1]
    forged = replace(
        request, status_callback=request.status_callback[:-1] + ("1" if last == "0" else "0")
    )

    await twilio_calls_back(client, twilio, forged, "delivered")
    assert await apply_receipts(sessionmaker) == []

    recipient = await one(client, auth, cid, number)
    assert recipient["status"] == "scheduled"
    [attempt] = recipient["attempts_history"]
    assert (attempt["status"], attempt["provider_message_id"]) == ("unknown", None)

"""Inbound SMS keywords (README, Webhooks): the pure matcher, and the webhooks acting on them —
opt-out records and the cancellation of waiting messages across the school's campaigns."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select

from app.opt_outs import keywords
from app.opt_outs.keywords import Action
from tests.support.api import launched, people, recipients
from tests.support.webhooks import (
    EMPTY_TWIML,
    TWILIO_INBOUND,
    TWILIO_STATUS,
    Sessions,
    TelnyxSchool,
    TwilioAccount,
    TwilioSchool,
    add_telnyx_school,
    add_twilio_school,
    inbound_form,
    new_message_sid,
    opt_out_rows,
    post_telnyx,
    post_twilio,
    record_attempt,
    status_form,
    telnyx_inbound,
)

PARENT = "+12015550123"


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ("STOP", "STOP"),
        ("stop", "STOP"),
        ("Stop", "STOP"),
        ("  STOP  ", "STOP"),
        ("STOP.", "STOP"),
        ("stop!!!", "STOP"),
        ("¡Stop!", "STOP"),
        ('"STOP"', "STOP"),
        ("(stop)", "STOP"),
        ("STOP\n", "STOP"),
        ("\u200bSTOP\u00a0", "STOP"),  # zero-width space, no-break space
        ("\uff33\uff34\uff2f\uff30", "STOP"),  # full-width letters
        ("STOP 🛑", "STOP"),
        ("StopAll", "STOPALL"),
        ("STOP ALL", "STOP ALL"),
        ("stop all", "STOP ALL"),
        ("Stop  All!", "STOP ALL"),
        ("REVOKE", "REVOKE"),
        ("revoke.", "REVOKE"),
        ("OptOut", "OPTOUT"),
        ("optout!", "OPTOUT"),
        ("unsubscribe", "UNSUBSCRIBE"),
        ("Cancel.", "CANCEL"),
        ("end", "END"),
        ("QUIT!", "QUIT"),
        ("do not message", "do not message"),
        ("Do Not Text", "do not text"),
        ("do   not\ttext", "do not text"),
        ("DO NOT TEXT!!", "do not text"),
        ("Take me off your list.", "take me off your list"),
        ("  take me   OFF your\nlist ", "take me off your list"),
    ],
)
def test_opt_out_keywords(body: str, word: str) -> None:
    assert keywords.match(body) == keywords.Keyword(Action.opt_out, word)


@pytest.mark.parametrize(
    ("body", "word"),
    [("START", "START"), ("start.", "START"), ("Unstop", "UNSTOP"), (" yes! ", "YES")],
)
def test_opt_in_keywords(body: str, word: str) -> None:
    assert keywords.match(body) == keywords.Keyword(Action.opt_in, word)


@pytest.mark.parametrize(
    "body",
    [
        "STOP this bill",
        "please stop",
        "stop please",
        "S.T.O.P",
        "S T O P",
        "stopp",
        "stop all please",
        "opt out",
        "revoked",
        "don't text",
        "do not text me",
        "yes please",
        "Started",
        "",
        "   ",
        "!!!",
        "OK",
    ],
)
def test_ordinary_replies_are_not_keywords(body: str) -> None:
    assert keywords.match(body) is None


def test_normalize() -> None:
    assert keywords.normalize("  Do  NOT\ttext!! ") == "do not text"
    assert keywords.normalize("a, b") == "a, b"  # inner punctuation stays


async def _inbound(
    client: httpx.AsyncClient,
    account: TwilioAccount,
    body: str,
    sender: str = PARENT,
    opt_out_type: str | None = None,
) -> httpx.Response:
    form = inbound_form(account, sender, body)
    if opt_out_type is not None:  # Twilio's Advanced Opt-Out classified the message
        form.append(("OptOutType", opt_out_type))
    response = await post_twilio(client, TWILIO_INBOUND, form, account.auth_token)
    assert response.status_code == 200, response.text
    assert response.text == EMPTY_TWIML
    assert response.headers["content-type"].startswith("text/xml")
    return response


async def _statuses(
    client: httpx.AsyncClient, auth: dict[str, str], campaign_id: str
) -> dict[str, tuple[str, str | None]]:
    return {
        r["phone"]: (r["status"], r["failed_reason"] and r["failed_reason"]["code"])
        for r in await recipients(client, auth, campaign_id)
    }


async def test_stop_opts_out_and_cancels_waiting_messages_in_every_campaign(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    auth, account = twilio_school.auth, twilio_school.account
    other = "+12015550124"
    # First campaign: the parent's message is with the carrier (pending).
    first = await launched(client, auth, people(PARENT, other))
    by_phone = {r["phone"]: r for r in await recipients(client, auth, first["id"])}
    sid = new_message_sid()
    await record_attempt(sessionmaker, by_phone[PARENT]["id"], "twilio", sid)
    sent = await post_twilio(
        client, TWILIO_STATUS, status_form(account, sid, "sent"), account.auth_token
    )
    assert sent.status_code == 200
    # Second campaign: still in queue. Third: a soft bounce, scheduled for a retry.
    second = await launched(client, auth, people(PARENT, other))
    third = await launched(client, auth, people(PARENT))
    retry = (await recipients(client, auth, third["id"]))[0]
    sid3 = new_message_sid()
    await record_attempt(sessionmaker, retry["id"], "twilio", sid3)
    bounced = await post_twilio(
        client,
        TWILIO_STATUS,
        status_form(account, sid3, "undelivered", "30001"),
        account.auth_token,
    )
    assert bounced.status_code == 200
    assert (await _statuses(client, auth, third["id"]))[PARENT] == ("scheduled", "reattempting")
    # The same number at another school (another Twilio account) is not touched.
    neighbour = await add_twilio_school(client, name="Neighbour")
    elsewhere = await launched(client, neighbour.auth, people(PARENT))

    await _inbound(client, account, " Stop! ")

    [record] = await opt_out_rows(sessionmaker, twilio_school.id)
    assert (record.phone, record.source, record.keyword) == (PARENT, "keyword", "STOP")
    assert str(record.campaign_id) == third["id"]  # the campaign it last received
    # Stamped by the database as it was stored: not before its transaction began (here,
    # the test's own, with its first statement, however long ago), nor in the future.
    async with sessionmaker() as session:
        began = (await session.execute(select(func.now()))).scalar_one()
    assert began <= record.created_at <= datetime.now(UTC)
    listed = (await client.get("/v1/opt-outs", headers=auth)).json()["items"]
    assert [(o["phone"], o["source"], o["keyword"]) for o in listed] == [
        (PARENT, "keyword", "STOP")
    ]

    assert (await _statuses(client, auth, first["id"])) == {
        PARENT: ("pending", None),  # already with the carrier: not cancelled
        other: ("queued", None),
    }
    assert (await _statuses(client, auth, second["id"])) == {
        PARENT: ("failed", "opted_out"),
        other: ("queued", None),
    }
    assert (await _statuses(client, auth, third["id"])) == {PARENT: ("failed", "opted_out")}
    cancelled = (await recipients(client, auth, third["id"]))[0]
    assert cancelled["next_attempt_at"] is None
    assert (await _statuses(client, neighbour.auth, elsewhere["id"])) == {PARENT: ("queued", None)}
    assert await opt_out_rows(sessionmaker, neighbour.id) == []
    # A campaign launched now fails the number at once.
    later = await launched(client, auth, people(PARENT))
    assert (await _statuses(client, auth, later["id"])) == {PARENT: ("failed", "opted_out")}


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ("stop", "STOP"),
        ("STOP.", "STOP"),
        ("Unsubscribe", "UNSUBSCRIBE"),
        ("cancel", "CANCEL"),
        ("End", "END"),
        ("quit", "QUIT"),
        ("STOPALL", "STOPALL"),
        ("Stop all", "STOP ALL"),
        ("revoke", "REVOKE"),
        ("OPTOUT", "OPTOUT"),
        ("Do not message", "do not message"),
        ("do not text!", "do not text"),
        ("Take me off your list", "take me off your list"),
    ],
)
async def test_each_opt_out_keyword_over_the_webhook(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    body: str,
    word: str,
) -> None:
    campaign = await launched(client, twilio_school.auth, people(PARENT))
    await _inbound(client, twilio_school.account, body)
    [record] = await opt_out_rows(sessionmaker, twilio_school.id)
    assert (record.source, record.keyword) == ("keyword", word)
    statuses = await _statuses(client, twilio_school.auth, campaign["id"])
    assert statuses == {PARENT: ("failed", "opted_out")}


@pytest.mark.parametrize("body", ["STOP this bill", "Thanks! See you at 5", "stop please", ""])
async def test_other_replies_change_nothing(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions, body: str
) -> None:
    campaign = await launched(client, twilio_school.auth, people(PARENT))
    await _inbound(client, twilio_school.account, body)
    assert await opt_out_rows(sessionmaker, twilio_school.id) == []
    statuses = await _statuses(client, twilio_school.auth, campaign["id"])
    assert statuses == {PARENT: ("queued", None)}


def test_a_provider_classification_wins_over_the_words() -> None:
    stop, start = Action.opt_out, Action.opt_in
    assert keywords.classify("ARRET", "STOP") == keywords.Keyword(stop, "arret")
    assert keywords.classify("Alto.", "stop") == keywords.Keyword(stop, "alto")
    assert keywords.classify("quit", "STOP") == keywords.Keyword(stop, "QUIT")  # ours, kept
    assert keywords.classify("", "STOP") == keywords.Keyword(stop, "STOP")
    assert keywords.classify("x" * 200, "STOP") == keywords.Keyword(stop, "x" * 64)
    assert keywords.classify("REPRENDRE", "START") == keywords.Keyword(start, "reprendre")
    assert keywords.classify("STOP", "START") == keywords.Keyword(start, "stop")
    assert keywords.classify("STOP", "HELP") is None
    assert keywords.classify("AIDE", "HELP") is None
    # No classification, or one we do not know: the words decide.
    assert keywords.classify("STOP", None) == keywords.Keyword(stop, "STOP")
    assert keywords.classify("STOP", "") == keywords.Keyword(stop, "STOP")
    assert keywords.classify("STOP", "SUBSCRIBE") == keywords.Keyword(stop, "STOP")
    assert keywords.classify("ARRET", None) is None


async def test_twilio_opt_out_type_stop_opts_out_whatever_the_words(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    """Advanced Opt-Out: a school's custom keyword in another language, classified STOP by
    Twilio (which now blocks the number), opts the parent out here too."""
    campaign = await launched(client, twilio_school.auth, people(PARENT))
    await _inbound(client, twilio_school.account, "Arrêt", opt_out_type="STOP")
    [record] = await opt_out_rows(sessionmaker, twilio_school.id)
    assert (record.phone, record.source, record.keyword) == (PARENT, "keyword", "arrêt")
    statuses = await _statuses(client, twilio_school.auth, campaign["id"])
    assert statuses == {PARENT: ("failed", "opted_out")}


async def test_twilio_opt_out_type_start_opts_in_and_help_changes_nothing(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    account = twilio_school.account
    await _inbound(client, account, "STOP")
    assert len(await opt_out_rows(sessionmaker, twilio_school.id)) == 1
    # HELP, whatever the words (even STOP), changes nothing.
    await _inbound(client, account, "START", opt_out_type="HELP")
    assert len(await opt_out_rows(sessionmaker, twilio_school.id)) == 1
    # START in another language: back in.
    await _inbound(client, account, "Reanudar", opt_out_type="START")
    assert await opt_out_rows(sessionmaker, twilio_school.id) == []
    await _inbound(client, account, "STOP", opt_out_type="HELP")
    assert await opt_out_rows(sessionmaker, twilio_school.id) == []
    campaign = await launched(client, twilio_school.auth, people(PARENT))
    statuses = await _statuses(client, twilio_school.auth, campaign["id"])
    assert statuses == {PARENT: ("queued", None)}


async def test_start_opts_back_in(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    auth, account = twilio_school.auth, twilio_school.account
    # No opt-out yet: START is harmless.
    await _inbound(client, account, "START")
    await _inbound(client, account, "STOP")
    assert len(await opt_out_rows(sessionmaker, twilio_school.id)) == 1
    await _inbound(client, account, "stop")  # again: the first record is kept
    assert [r.keyword for r in await opt_out_rows(sessionmaker, twilio_school.id)] == ["STOP"]
    await _inbound(client, account, "Start.")
    assert await opt_out_rows(sessionmaker, twilio_school.id) == []
    campaign = await launched(client, auth, people(PARENT))
    assert (await _statuses(client, auth, campaign["id"])) == {PARENT: ("queued", None)}
    # YES and UNSTOP too, even after a staff opt-out.
    for word in ("YES", "unstop"):
        staff = await client.post("/v1/opt-outs", json={"phone": PARENT}, headers=auth)
        assert staff.status_code == 201
        await _inbound(client, account, word)
        assert await opt_out_rows(sessionmaker, twilio_school.id) == []


async def test_a_sender_that_is_not_a_phone_number_is_ignored(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    await _inbound(client, twilio_school.account, "STOP", sender="SCHOOLCO")
    assert await opt_out_rows(sessionmaker, twilio_school.id) == []


async def test_inbound_goes_to_the_school_whose_number_received_it(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    """Two schools on one Twilio account, each with its number: a STOP to one number opts
    out of that school only; to a number neither has, of both (never lost)."""
    north = await add_twilio_school(client, name="North")
    shared = TwilioAccount(
        account_sid=north.account.account_sid,
        auth_token=north.account.auth_token,
        from_number="+15005550009",
    )
    south = await add_twilio_school(client, shared, name="South")
    await _inbound(client, south.account, "STOP")  # To: South's number
    assert await opt_out_rows(sessionmaker, north.id) == []
    assert len(await opt_out_rows(sessionmaker, south.id)) == 1

    form = inbound_form(north.account, "+12015550124", "STOP", to="+15005550001")
    response = await post_twilio(client, TWILIO_INBOUND, form, north.account.auth_token)
    assert response.status_code == 200
    assert "+12015550124" in {r.phone for r in await opt_out_rows(sessionmaker, north.id)}
    assert "+12015550124" in {r.phone for r in await opt_out_rows(sessionmaker, south.id)}


async def test_telnyx_inbound_keywords(
    client: httpx.AsyncClient, telnyx_school: TelnyxSchool, sessionmaker: Sessions
) -> None:
    campaign = await launched(client, telnyx_school.auth, people(PARENT))
    # Another school on the same Telnyx account (same key), another number.
    sibling = await add_telnyx_school(
        client, telnyx_school.keys, from_number="+15005550008", name="Sibling"
    )
    body = telnyx_inbound(PARENT, telnyx_school.from_number, "Do not text.")
    response = await post_telnyx(client, telnyx_school.keys, body)
    assert response.status_code == 200, response.text
    [record] = await opt_out_rows(sessionmaker, telnyx_school.id)
    assert (record.phone, record.source, record.keyword) == (PARENT, "keyword", "do not text")
    assert await opt_out_rows(sessionmaker, sibling.id) == []
    statuses = await _statuses(client, telnyx_school.auth, campaign["id"])
    assert statuses == {PARENT: ("failed", "opted_out")}

    body = telnyx_inbound(PARENT, telnyx_school.from_number, "STOP this bill")
    assert (await post_telnyx(client, telnyx_school.keys, body)).status_code == 200
    body = telnyx_inbound(PARENT, telnyx_school.from_number, "unstop")
    assert (await post_telnyx(client, telnyx_school.keys, body)).status_code == 200
    assert await opt_out_rows(sessionmaker, telnyx_school.id) == []

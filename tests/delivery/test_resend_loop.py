"""Resend through the delivery loop: a staff resend (one contact, or every failed contact of
a campaign) is handed to Twilio again by the next cycle of the real Engine, and only then.

Campaigns are made and read over the API; Twilio is the fake on loopback, and its
delivery receipts come over the signed status webhook. Nothing of Campanile's is patched.
"""

from __future__ import annotations

import httpx

from app.delivery.engine import Engine
from tests.fakes.twilio import Answer
from tests.support.api import apply_receipts, recipients
from tests.support.delivery import TimedFakeTwilio, TwilioSchool, launch, one, phone
from tests.support.webhooks import TWILIO_STATUS, Sessions, TwilioAccount, post_twilio, status_form


async def twilio_says(
    client: httpx.AsyncClient,
    sessionmaker: Sessions,
    twilio: TimedFakeTwilio,
    number: str,
    status: str,
    code: str | None = None,
) -> None:
    """Twilio posts a signed status callback for its message to `number`; the receipt
    applier applies it."""
    account = TwilioAccount(twilio.account_sid, twilio.auth_token, twilio.from_number)
    form = status_form(account, twilio.sid_to(number), status, code)
    response = await post_twilio(client, TWILIO_STATUS, form, twilio.auth_token)
    assert response.status_code == 200, response.text
    await apply_receipts(sessionmaker)


async def test_a_resent_contact_is_handed_to_twilio_by_the_next_cycle(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
) -> None:
    auth = twilio_school.auth
    number, other = phone(0), phone(1)
    # 21606: the From number cannot reach this destination (a config error): hard, and
    # its reason, sending_error, is resendable.
    twilio.script(number, Answer.error(21606))
    cid = await launch(client, twilio_school, number, other)
    assert await delivery.run_once() == 2

    failed = await one(client, auth, cid, number)
    assert failed["status"] == "failed"
    assert failed["failed_reason"]["code"] == "sending_error"
    assert failed["failed_reason"]["resendable"] is True
    assert failed["failed_reason"]["provider_error_code"] == "21606"
    assert failed["attempts"] == 1
    # A hard failure is not retried on its own.
    assert await delivery.run_once() == 0
    assert twilio.sends_to(number) == 1

    response = await client.post(
        f"/v1/campaigns/{cid}/contacts/{failed['id']}/resend", headers=auth
    )
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    assert response.json()["failed_reason"] is None

    assert await delivery.run_once() == 1

    # Twilio got a second create for that number (and nothing more for the other one).
    assert twilio.sends_to(number) == 2
    assert twilio.sends_to(other) == 1
    assert [r.to for r in twilio.requests].count(number) == 2
    resent = await one(client, auth, cid, number)
    assert resent["status"] == "queued"
    assert resent["status_label"] == "Still in Queue"
    assert resent["failed_reason"] is None
    assert resent["attempts"] == 2
    first, second = resent["attempts_history"]
    assert (first["provider_message_id"], first["error_code"]) == (None, "21606")
    assert second["provider_message_id"] == twilio.sid_to(number)
    assert (second["status"], second["error_code"]) == ("queued", None)
    # Handed over once: the cycle after it has nothing to send.
    assert await delivery.run_once() == 0
    assert twilio.sends_to(number) == 2


async def test_resend_failed_sends_the_resendable_and_skips_the_others(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    auth = twilio_school.auth
    config_error, filtered, invalid, stop, unreachable, fine = (phone(n) for n in range(6))
    twilio.script(config_error, Answer.error(21606))  # sending_error: resendable
    twilio.script(invalid, Answer.error(21211))  # invalid_number: not resendable
    twilio.script(stop, Answer.error(21610))  # opted_out: not resendable
    cid = await launch(
        client, twilio_school, config_error, filtered, invalid, stop, unreachable, fine
    )
    assert await delivery.run_once() == 6
    # Accepted, then undelivered, as Twilio's callbacks say: 30007 the carrier filtered it
    # (blocked: resendable), 30003 the handset is unreachable (never resendable).
    await twilio_says(client, sessionmaker, twilio, filtered, "undelivered", "30007")
    await twilio_says(client, sessionmaker, twilio, unreachable, "undelivered", "30003")
    await twilio_says(client, sessionmaker, twilio, fine, "delivered")

    before = {
        r["phone"]: (r["status"], (r["failed_reason"] or {}).get("code"))
        for r in await recipients(client, auth, cid)
    }
    assert before == {
        config_error: ("failed", "sending_error"),
        filtered: ("failed", "blocked"),
        invalid: ("failed", "invalid_number"),
        stop: ("failed", "opted_out"),
        unreachable: ("failed", "unreachable_number"),
        fine: ("delivered", None),
    }
    assert await delivery.run_once() == 0

    report = await client.post(f"/v1/campaigns/{cid}/resend-failed", headers=auth)
    assert report.status_code == 202, report.text
    assert report.json() == {
        "queued": 2,
        "skipped": {"invalid_number": 1, "opted_out": 1, "unreachable_number": 1},
    }

    assert await delivery.run_once() == 2

    sends = {n: twilio.sends_to(n) for n in before}
    assert sends == {
        config_error: 2,
        filtered: 2,
        invalid: 1,
        stop: 1,
        unreachable: 1,
        fine: 1,
    }
    for number in (config_error, filtered):
        resent = await one(client, auth, cid, number)
        assert resent["status"] == "queued", number
        assert resent["failed_reason"] is None, number
        assert resent["attempts"] == 2, number
        assert len(resent["attempts_history"]) == 2, number
    for number, code in ((invalid, "21211"), (stop, "21610"), (unreachable, "30003")):
        skipped = await one(client, auth, cid, number)
        assert skipped["status"] == "failed", number
        assert skipped["failed_reason"]["provider_error_code"] == code, number
        assert skipped["attempts"] == 1, number
        assert skipped["next_attempt_at"] is None, number
    assert (await one(client, auth, cid, fine))["status"] == "delivered"
    campaign = (await client.get(f"/v1/campaigns/{cid}", headers=auth)).json()
    assert campaign["status"] == "active"
    assert (campaign["counts"]["queued"], campaign["counts"]["failed"]) == (2, 3)

    # Nothing more is due; the skipped contacts are never sent again.
    assert await delivery.run_once() == 0
    assert sum(twilio.sends_to(n) for n in before) == 8

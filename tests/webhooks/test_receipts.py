"""Receipts through the webhooks obey the status rules (`app.sending.status`): never
backwards, the same receipt applied once, a late `delivered` wins, an archived campaign keeps
its visible status; and a receipt that arrives before its message id is recorded waits, then
is applied."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from app import metrics
from app.delivery import applier as receipts
from app.kit.clock import utcnow
from app.models import Attempt, StoredReceipt
from tests.support.api import apply_receipts, launched, people, recipients
from tests.support.webhooks import (
    TWILIO_STATUS,
    Sessions,
    TelnyxSchool,
    TwilioSchool,
    new_message_sid,
    opt_out_rows,
    post_telnyx,
    post_twilio,
    recipient_detail,
    record_attempt,
    status_form,
    stored_receipts,
    telnyx_receipt,
)


class Story:
    """One recipient of a launched campaign, and the callbacks Twilio posts about it."""

    def __init__(self, client: httpx.AsyncClient, school: TwilioSchool, sessions: Sessions) -> None:
        self.client, self.school, self.sessions = client, school, sessions
        self.campaign: dict[str, Any] = {}
        self.recipient_id = ""

    async def launch(self, phone: str = "+12015550123") -> Story:
        self.campaign = await launched(self.client, self.school.auth, people(phone))
        self.recipient_id = (await recipients(self.client, self.school.auth, self.campaign["id"]))[
            0
        ]["id"]
        return self

    async def attempt(self) -> str:
        sid = new_message_sid()
        await record_attempt(self.sessions, self.recipient_id, "twilio", sid)
        return sid

    async def post(self, sid: str, status: str, code: str | None = None) -> None:
        account = self.school.account
        response = await post_twilio(
            self.client,
            TWILIO_STATUS,
            status_form(account, sid, status, code),
            account.auth_token,
        )
        assert response.status_code == 200, response.text

    async def detail(self) -> dict[str, Any]:
        return await recipient_detail(
            self.client, self.school.auth, self.campaign["id"], self.recipient_id
        )

    async def action(self, name: str) -> None:
        response = await self.client.post(
            f"/v1/campaigns/{self.campaign['id']}/{name}", headers=self.school.auth
        )
        assert response.status_code == 200, response.text


async def story(client: httpx.AsyncClient, school: TwilioSchool, sessions: Sessions) -> Story:
    return await Story(client, school, sessions).launch()


async def test_sent_after_delivered_changes_nothing(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    s = await story(client, twilio_school, sessionmaker)
    sid = await s.attempt()
    await s.post(sid, "delivered")
    await s.post(sid, "sent")
    await s.post(sid, "sending")
    await s.post(sid, "undelivered", "30003")
    detail = await s.detail()
    assert (detail["status"], detail["failed_reason"]) == ("delivered", None)
    assert [a["status"] for a in detail["attempts_history"]] == ["delivered"]
    stored = await stored_receipts(sessionmaker, sid)
    # Every receipt is kept (history), each marked handled.
    assert [r.provider_status for r in stored] == ["delivered", "sent", "sending", "undelivered"]
    assert all(r.applied_at is not None for r in stored)


async def test_failure_then_late_sent_stays_failed(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    s = await story(client, twilio_school, sessionmaker)
    sid = await s.attempt()
    await s.post(sid, "undelivered", "30006")
    await s.post(sid, "sent")
    detail = await s.detail()
    assert detail["status"] == "failed"
    assert detail["failed_reason"]["code"] == "unreachable_number"
    assert detail["failed_reason"]["definition"] == (
        "This number was sent to a landline or unreachable carrier for this phone number type"
    )


async def test_the_same_receipt_twice_is_applied_once(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    s = await story(client, twilio_school, sessionmaker)
    sid = await s.attempt()
    await s.post(sid, "sent")
    await s.post(sid, "undelivered", "30001")  # soft: a retry is scheduled
    first = await s.detail()
    assert first["status"] == "scheduled"
    await s.post(sid, "undelivered", "30001")
    await s.post(sid, "sent")
    again = await s.detail()
    # The backoff was not computed a second time, nothing moved.
    assert again == first
    assert [r.provider_status for r in await stored_receipts(sessionmaker, sid)] == [
        "sent",
        "undelivered",
    ]


async def test_late_delivered_for_an_earlier_attempt_wins_and_cancels_the_retry(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    s = await story(client, twilio_school, sessionmaker)
    first = await s.attempt()
    await s.post(first, "sent")
    await s.post(first, "undelivered", "30017")  # soft
    scheduled = await s.detail()
    assert scheduled["status"] == "scheduled"
    assert scheduled["failed_reason"]["code"] == "reattempting"
    assert scheduled["next_attempt_at"] is not None

    await s.post(first, "delivered")  # the carrier did deliver it after all
    detail = await s.detail()
    assert (detail["status"], detail["failed_reason"], detail["next_attempt_at"]) == (
        "delivered",
        None,
        None,
    )


async def test_late_delivered_for_an_earlier_attempt_wins_over_the_next_attempt(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    s = await story(client, twilio_school, sessionmaker)
    first = await s.attempt()
    await s.post(first, "undelivered", "30001")
    second = await s.attempt()  # the retry went out
    await s.post(second, "sent")
    assert (await s.detail())["status"] == "pending"
    await s.post(first, "delivered")
    detail = await s.detail()
    assert (detail["status"], detail["next_attempt_at"]) == ("delivered", None)
    assert [a["status"] for a in detail["attempts_history"]] == ["delivered", "sent"]
    # The retry's own receipts change nothing more.
    await s.post(second, "undelivered", "30003")
    assert (await s.detail())["status"] == "delivered"


async def test_a_failure_of_an_earlier_attempt_does_not_touch_the_latest(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    s = await story(client, twilio_school, sessionmaker)
    first = await s.attempt()
    await s.post(first, "sent")
    second = await s.attempt()
    await s.post(second, "sent")
    await s.post(first, "undelivered", "30003")  # late, for the first attempt
    detail = await s.detail()
    assert (detail["status"], detail["failed_reason"]) == ("pending", None)
    assert [a["status"] for a in detail["attempts_history"]] == ["undelivered", "sent"]


async def test_archived_campaign_keeps_history_not_status(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    s = await story(client, twilio_school, sessionmaker)
    sid = await s.attempt()
    await s.post(sid, "sent")
    await s.action("archive")
    await s.post(sid, "delivered")
    detail = await s.detail()
    assert detail["status"] == "pending"  # "Pending stays Pending"
    assert [a["status"] for a in detail["attempts_history"]] == ["delivered"]


async def test_closed_campaign_soft_bounce_is_final(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    s = await story(client, twilio_school, sessionmaker)
    sid = await s.attempt()
    await s.post(sid, "sent")
    await s.action("close")
    await s.post(sid, "undelivered", "30001")
    detail = await s.detail()
    assert detail["status"] == "failed"  # nothing more is sent for a closed campaign
    assert detail["failed_reason"]["code"] == "sending_error"
    assert detail["next_attempt_at"] is None


async def test_opt_out_error_in_a_receipt_records_a_provider_opt_out(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    s = await story(client, twilio_school, sessionmaker)
    sid = await s.attempt()
    await s.post(sid, "failed", "21610")
    detail = await s.detail()
    assert detail["failed_reason"]["code"] == "opted_out"
    [record] = await opt_out_rows(sessionmaker, twilio_school.id)
    assert (record.phone, record.source, str(record.campaign_id)) == (
        "+12015550123",
        "provider",
        s.campaign["id"],
    )


async def test_telnyx_event_id_is_the_idempotency_key(
    client: httpx.AsyncClient, telnyx_school: TelnyxSchool, sessionmaker: Sessions
) -> None:
    campaign = await launched(client, telnyx_school.auth, people("+12015550123"))
    recipient = (await recipients(client, telnyx_school.auth, campaign["id"]))[0]
    message_id = "40317a6e-0000-4000-8000-00000000abcd"
    await record_attempt(sessionmaker, recipient["id"], "telnyx", message_id)
    body = telnyx_receipt(message_id, "delivery_failed", code="40008", event_id="evt-1")
    for _ in range(2):
        response = await post_telnyx(client, telnyx_school.keys, body)
        assert response.status_code == 200, response.text
    # Another delivery of the same event, re-serialised by Telnyx: still the same event.
    again = telnyx_receipt(message_id, "delivery_failed", code="40008", event_id="evt-1")
    assert (await post_telnyx(client, telnyx_school.keys, again)).status_code == 200
    stored = await stored_receipts(sessionmaker, message_id)
    assert [r.event_id for r in stored] == ["evt-1"]
    detail = await recipient_detail(client, telnyx_school.auth, campaign["id"], recipient["id"])
    assert detail["status"] == "scheduled"  # 40008 is soft


async def test_receipt_before_its_message_id_waits_then_is_applied(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    """The race of README, Webhooks: Twilio's callback arrives before the send's record step has
    stored the message id. It is kept, then applied by the record step."""
    s = await story(client, twilio_school, sessionmaker)
    async with sessionmaker() as session:  # the claim: an attempt being handed over
        attempt = Attempt(recipient_id=int(s.recipient_id), provider="twilio", status="sending")
        session.add(attempt)
        await session.commit()
    sid = new_message_sid()
    await s.post(sid, "delivered")  # out of order as well: delivered before sent
    await s.post(sid, "sent")
    waiting = await stored_receipts(sessionmaker, sid)
    assert [(r.provider_status, r.applied_at) for r in waiting] == [
        ("delivered", None),
        ("sent", None),
    ]
    assert (await s.detail())["status"] == "queued"

    async with sessionmaker() as session:  # the record step, as the engine does it
        attempt = await session.get_one(Attempt, attempt.id)
        attempt.provider_message_id = sid
        attempt.status = "queued"
        await session.commit()
    assert (await s.detail())["status"] == "queued"  # until the applier's next batch
    results = await apply_receipts(sessionmaker)
    assert results == [receipts.Result.applied, receipts.Result.stale]  # in arrival order

    detail = await s.detail()
    assert detail["status"] == "delivered"
    assert [a["status"] for a in detail["attempts_history"]] == ["delivered"]
    applied = await stored_receipts(sessionmaker, sid)
    assert all(r.applied_at is not None and r.attempt_id == attempt.id for r in applied)
    async with sessionmaker() as session:
        query = select(Attempt.status).where(Attempt.id == attempt.id)
        assert (await session.execute(query)).scalar_one() == "delivered"


async def test_receipts_that_never_find_their_message_are_counted(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    """They stay stored, waiting (applied_at null); the worker's sweep sets a gauge and logs
    them once they have waited longer than UNMATCHED_AFTER."""
    s = await story(client, twilio_school, sessionmaker)
    lost, recent = new_message_sid(), new_message_sid()
    await s.post(lost, "delivered")
    await s.post(recent, "sent")
    async with sessionmaker() as session:
        await session.execute(
            update(StoredReceipt)
            .where(StoredReceipt.provider_message_id == lost)
            .values(received_at=utcnow() - receipts.UNMATCHED_AFTER - timedelta(minutes=1))
        )
        assert await receipts.report_unmatched(session) == 1
        await session.commit()
    assert metrics.receipts_unmatched._value.get() == 1
    assert [r.applied_at for r in await stored_receipts(sessionmaker, lost)] == [None]


# -- delivery_confirmed (README, Webhooks) ------------------------------------------------------


async def test_twilio_delivered_is_confirmed_and_nothing_else_is(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    """`delivery_confirmed` is null while the message is on its way, and after a failure
    (scheduled or failed); a carrier's `delivered` makes it true."""
    s = await story(client, twilio_school, sessionmaker)
    sid = await s.attempt()
    assert (await s.detail())["delivery_confirmed"] is None  # queued
    await s.post(sid, "sent")
    detail = await s.detail()
    assert (detail["status"], detail["delivery_confirmed"]) == ("pending", None)
    await s.post(sid, "failed", "30001")  # queue overflow: soft
    detail = await s.detail()
    assert (detail["status"], detail["delivery_confirmed"]) == ("scheduled", None)

    retry = await s.attempt()
    await s.post(retry, "sent")
    await s.post(retry, "delivered")
    detail = await s.detail()
    assert (detail["status"], detail["delivery_confirmed"]) == ("delivered", True)
    [listed] = await recipients(client, twilio_school.auth, s.campaign["id"])
    assert listed["delivery_confirmed"] is True
    # A late failure of the first attempt changes nothing.
    await s.post(sid, "undelivered", "30003")
    assert (await s.detail())["delivery_confirmed"] is True

    hard = await Story(client, twilio_school, sessionmaker).launch("+12015550124")
    await hard.post(await hard.attempt(), "undelivered", "30003")
    detail = await hard.detail()
    assert (detail["status"], detail["delivery_confirmed"]) == ("failed", None)

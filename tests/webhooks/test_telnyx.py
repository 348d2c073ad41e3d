"""POST /v1/webhooks/telnyx: Ed25519 signatures checked against our accounts' public keys
before the body is believed, the 300 s window, refusals that change nothing, receipts."""

from __future__ import annotations

import csv
import io
import json
import math
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import update

from app.config import Settings
from app.kit.crypto import SecretBox
from app.models import ProviderAccount
from app.providers.base import InvalidSignature
from app.providers.callbacks import AttemptNames
from app.providers.telnyx import signature
from tests.support.api import launched, people, recipients
from tests.support.webhooks import (
    TELNYX,
    Sessions,
    TelnyxKeys,
    TelnyxSchool,
    add_telnyx_school,
    assert_problem,
    count_receipts,
    post_telnyx,
    recipient_detail,
    record_attempt,
    stored_receipts,
    telnyx_receipt,
)

MESSAGE_ID = "40317a6e-0000-4000-8000-0000000000aa"


async def sent_recipient(
    client: httpx.AsyncClient, school: TelnyxSchool, sessions: Sessions
) -> tuple[str, str]:
    campaign = await launched(client, school.auth, people("+12015550123"))
    recipient = (await recipients(client, school.auth, campaign["id"]))[0]
    await record_attempt(sessions, recipient["id"], "telnyx", MESSAGE_ID)
    return campaign["id"], recipient["id"]


async def test_signed_sent_then_finalized(
    client: httpx.AsyncClient, telnyx_school: TelnyxSchool, sessionmaker: Sessions
) -> None:
    campaign_id, recipient_id = await sent_recipient(client, telnyx_school, sessionmaker)
    response = await post_telnyx(client, telnyx_school.keys, telnyx_receipt(MESSAGE_ID, "sent"))
    assert response.status_code == 200, response.text
    assert response.content == b""
    detail = await recipient_detail(client, telnyx_school.auth, campaign_id, recipient_id)
    assert detail["status"] == "pending"
    body = telnyx_receipt(MESSAGE_ID, "delivered", event_type="message.finalized")
    assert (await post_telnyx(client, telnyx_school.keys, body)).status_code == 200
    detail = await recipient_detail(client, telnyx_school.auth, campaign_id, recipient_id)
    assert detail["status"] == "delivered"
    assert detail["attempts_history"][0]["status"] == "delivered"


async def test_a_receipt_naming_an_attempt_whose_answer_was_lost_settles_it(
    client: httpx.AsyncClient,
    telnyx_school: TelnyxSchool,
    sessionmaker: Sessions,
    settings: Settings,
) -> None:
    """Telnyx has no lookup: an attempt whose create answer was lost (no message id) is
    settled by the webhooks of its message, which come to the `webhook_url` naming it,
    and learns its message id from them. A name with a wrong tag names nothing."""
    assert settings.secret_key
    names = AttemptNames(SecretBox(settings.secret_key))
    campaign = await launched(client, telnyx_school.auth, people("+12015550123"))
    recipient_id = (await recipients(client, telnyx_school.auth, campaign["id"]))[0]["id"]
    attempt = await record_attempt(sessionmaker, recipient_id, "telnyx", None, "unknown")
    wrong = names.name(attempt + 1)
    for name in (f"{attempt}.{wrong.partition('.')[2]}", f"{attempt}", "x.y"):
        body = telnyx_receipt(MESSAGE_ID, "sent")
        response = await client.post(
            f"{TELNYX}?attempt={name}", content=body, headers=telnyx_school.keys.headers(body)
        )
        assert response.status_code == 200, response.text
    detail = await recipient_detail(client, telnyx_school.auth, campaign["id"], recipient_id)
    assert detail["attempts_history"][0]["provider_message_id"] is None  # not named by those

    body = telnyx_receipt(MESSAGE_ID, "delivered", event_type="message.finalized")
    response = await client.post(
        f"{TELNYX}?attempt={names.name(attempt)}",
        content=body,
        headers=telnyx_school.keys.headers(body),
    )
    assert response.status_code == 200, response.text
    detail = await recipient_detail(client, telnyx_school.auth, campaign["id"], recipient_id)
    assert detail["status"] == "delivered"
    [history] = detail["attempts_history"]
    assert (history["provider_message_id"], history["status"]) == (MESSAGE_ID, "delivered")
    # The earlier `sent`, stored by its message id alone, now finds the attempt by that id.
    assert all(r.attempt_id == attempt for r in await stored_receipts(sessionmaker, MESSAGE_ID))


async def test_finalized_before_sent(
    client: httpx.AsyncClient, telnyx_school: TelnyxSchool, sessionmaker: Sessions
) -> None:
    """Telnyx: `message.finalized` may arrive before `message.sent`."""
    campaign_id, recipient_id = await sent_recipient(client, telnyx_school, sessionmaker)
    for status in ("delivered", "sent"):
        body = telnyx_receipt(MESSAGE_ID, status)
        assert (await post_telnyx(client, telnyx_school.keys, body)).status_code == 200
    detail = await recipient_detail(client, telnyx_school.auth, campaign_id, recipient_id)
    assert detail["status"] == "delivered"


async def test_each_school_key_verifies_its_events(
    client: httpx.AsyncClient, telnyx_school: TelnyxSchool, sessionmaker: Sessions
) -> None:
    """The key is found by trying our accounts' keys: several accounts, and one stored key
    that is not a key at all, do not get in the way."""
    other = await add_telnyx_school(client, from_number="+15005550008", name="Other")
    broken = await add_telnyx_school(client, from_number="+15005550009", name="Broken")
    async with sessionmaker() as session:  # a stored key that is no key (the API refuses it)
        await session.execute(
            update(ProviderAccount)
            .where(ProviderAccount.school_id == uuid.UUID(broken.id))
            .values(public_key="not a key")
        )
        await session.commit()
    campaign = await launched(client, other.auth, people("+12015550199"))
    recipient = (await recipients(client, other.auth, campaign["id"]))[0]
    other_message = "40317a6e-0000-4000-8000-0000000000bb"
    await record_attempt(sessionmaker, recipient["id"], "telnyx", other_message)
    await sent_recipient(client, telnyx_school, sessionmaker)
    for keys, message_id in ((telnyx_school.keys, MESSAGE_ID), (other.keys, other_message)):
        response = await post_telnyx(client, keys, telnyx_receipt(message_id, "sent"))
        assert response.status_code == 200, response.text
        assert len(await stored_receipts(sessionmaker, message_id)) == 1


@pytest.mark.parametrize("age", [301, -301, 86_400])
async def test_replay_outside_the_window_is_refused(
    client: httpx.AsyncClient, telnyx_school: TelnyxSchool, sessionmaker: Sessions, age: int
) -> None:
    await sent_recipient(client, telnyx_school, sessionmaker)
    body = telnyx_receipt(MESSAGE_ID, "delivered")
    # Whole seconds, rounded away from now: int() alone would leave -301 s at most 300.x s
    # ahead by the time the service reads its clock. This way it is more than 300 s off
    # as long as the service reads its clock within a second.
    clock = time.time()
    then = math.floor(clock) - age if age > 0 else math.ceil(clock) - age
    assert_problem(await post_telnyx(client, telnyx_school.keys, body, timestamp=then), 403)
    assert await count_receipts(sessionmaker) == 0
    # Inside the window, the same event is accepted.
    inside = int(time.time()) - 290
    response = await post_telnyx(client, telnyx_school.keys, body, timestamp=inside)
    assert response.status_code == 200, response.text


async def test_refusals_change_nothing(
    client: httpx.AsyncClient, telnyx_school: TelnyxSchool, sessionmaker: Sessions
) -> None:
    campaign_id, recipient_id = await sent_recipient(client, telnyx_school, sessionmaker)
    before = await recipient_detail(client, telnyx_school.auth, campaign_id, recipient_id)
    body = telnyx_receipt(MESSAGE_ID, "delivered")
    keys = telnyx_school.keys
    signed = keys.headers(body)
    tampered = body.replace(b'"delivered"', b'"delivery_failed"')
    assert tampered != body
    cases: list[tuple[bytes, dict[str, str]]] = [
        (tampered, signed),  # the body changed after signing
        (body + b" ", signed),  # even by a byte
        (body, {**signed, "telnyx-timestamp": str(int(signed["telnyx-timestamp"]) + 1)}),
        (body, TelnyxKeys().headers(body)),  # signed by a key that is not ours
        (body, {"Content-Type": "application/json"}),  # no signature at all
        (body, {k: v for k, v in signed.items() if k != "telnyx-timestamp"}),
        (body, {**signed, "telnyx-signature-ed25519": "not base64!"}),
        (body, {**signed, "telnyx-signature-ed25519": ""}),
        (body, {**signed, "telnyx-timestamp": "yesterday"}),
    ]
    for content, headers in cases:
        response = await client.post(TELNYX, content=content, headers=headers)
        assert_problem(response, 403)
        assert response.json()["detail"] == (
            "The webhook is not signed by a provider account of this service."
        )
    assert await count_receipts(sessionmaker) == 0
    assert await recipient_detail(client, telnyx_school.auth, campaign_id, recipient_id) == before


async def test_no_telnyx_account_at_all_is_403(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    body = telnyx_receipt(MESSAGE_ID, "delivered")
    assert_problem(await post_telnyx(client, TelnyxKeys(), body), 403)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"meta": {}}',
        b'{"data": "x"}',
        json.dumps({"data": {"event_type": "message.sent", "id": "e"}}).encode(),
        json.dumps(
            {"data": {"event_type": "message.sent", "id": "e", "payload": {"to": []}}}
        ).encode(),
        json.dumps(
            {
                "data": {
                    "event_type": "message.finalized",
                    "payload": {"id": MESSAGE_ID, "to": [{"status": "delivered"}]},
                }
            }
        ).encode(),  # no data.id: no idempotency key
        json.dumps(
            {
                "data": {
                    "event_type": "message.finalized",
                    "id": "e",
                    "payload": {"id": MESSAGE_ID, "to": []},
                }
            }
        ).encode(),
        json.dumps(
            {"data": {"event_type": "message.received", "id": "e", "payload": {"id": "m"}}}
        ).encode(),
    ],
)
async def test_signed_but_malformed_is_400_and_nothing_changes(
    client: httpx.AsyncClient, telnyx_school: TelnyxSchool, sessionmaker: Sessions, body: bytes
) -> None:
    response = await post_telnyx(client, telnyx_school.keys, body)
    assert_problem(response, 400)
    assert await count_receipts(sessionmaker) == 0


@pytest.mark.parametrize("event_type", ["message.finalized.v2", "number_order.complete", None])
async def test_other_event_types_are_acknowledged_and_ignored(
    client: httpx.AsyncClient,
    telnyx_school: TelnyxSchool,
    sessionmaker: Sessions,
    event_type: str | None,
) -> None:
    body = json.dumps({"data": {"event_type": event_type, "id": "e", "payload": {}}}).encode()
    response = await post_telnyx(client, telnyx_school.keys, body)
    assert response.status_code == 200, response.text
    assert await count_receipts(sessionmaker) == 0


def test_signer_is_found_among_keys_and_headers_are_checked_first() -> None:
    ours, other = TelnyxKeys(), TelnyxKeys()
    body = telnyx_receipt(MESSAGE_ID, "sent")
    headers = ours.headers(body)
    signed = signature.signed_message(
        body, headers["telnyx-signature-ed25519"], headers["telnyx-timestamp"]
    )
    assert signed.signer(["not a key", other.public, ours.public]) == ours.public
    assert signed.signer([other.public]) is None
    assert signed.signer([]) is None
    stale = ours.headers(body, timestamp=int(time.time()) - 301)
    with pytest.raises(InvalidSignature, match="300 s"):
        signature.signed_message(body, stale["telnyx-signature-ed25519"], stale["telnyx-timestamp"])


# -- delivery_unconfirmed and expired (docs/providers.md §2.2) ------------------------------------


async def csv_rows(
    client: httpx.AsyncClient, auth: dict[str, str], campaign_id: str
) -> list[dict[str, str]]:
    response = await client.get(f"/v1/campaigns/{campaign_id}/contacts.csv", headers=auth)
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


async def test_delivery_unconfirmed_is_delivered_unconfirmed_and_completes_the_campaign(
    client: httpx.AsyncClient, telnyx_school: TelnyxSchool, sessionmaker: Sessions
) -> None:
    """Not Failed · Unknown Error (which invites a resend of a message that most likely
    arrived): Delivered, `delivery_confirmed` false, in the API and the export; with the
    other contact delivered and confirmed, the campaign is complete."""
    auth = telnyx_school.auth
    campaign = await launched(client, auth, people("+12015550123", "+12015550124"))
    cid = campaign["id"]
    ids = {r["phone"]: r["id"] for r in await recipients(client, auth, cid)}
    confirmed_id = "40317a6e-0000-4000-8000-0000000000cc"
    await record_attempt(sessionmaker, ids["+12015550123"], "telnyx", MESSAGE_ID)
    await record_attempt(sessionmaker, ids["+12015550124"], "telnyx", confirmed_id)
    for message_id, final in ((MESSAGE_ID, "delivery_unconfirmed"), (confirmed_id, "delivered")):
        for status in ("sent", final):
            body = telnyx_receipt(message_id, status)
            response = await post_telnyx(client, telnyx_school.keys, body)
            assert response.status_code == 200, response.text

    listed = {r["phone"]: r for r in await recipients(client, auth, cid)}
    unconfirmed = listed["+12015550123"]
    assert (unconfirmed["status"], unconfirmed["status_label"]) == ("delivered", "Delivered")
    assert unconfirmed["status_group"] == "delivered"
    assert unconfirmed["failed_reason"] is None
    assert unconfirmed["delivery_confirmed"] is False
    assert listed["+12015550124"]["delivery_confirmed"] is True
    detail = await recipient_detail(client, auth, cid, ids["+12015550123"])
    assert detail["delivery_confirmed"] is False
    assert detail["attempts_history"][0]["status"] == "delivery_unconfirmed"

    rows = {row["phone"]: row for row in await csv_rows(client, auth, cid)}
    assert (rows["+12015550123"]["status"], rows["+12015550123"]["delivery_confirmed"]) == (
        "delivered",
        "false",
    )
    assert rows["+12015550124"]["delivery_confirmed"] == "true"
    assert rows["+12015550123"]["failed_reason"] == ""

    response = await client.get(f"/v1/campaigns/{cid}", headers=auth)
    assert response.json()["status"] == "complete"
    assert response.json()["counts"]["delivered"] == 2

    # Staff cannot resend it: only failed messages are resent.
    resend = await client.post(
        f"/v1/campaigns/{cid}/contacts/{ids['+12015550123']}/resend", headers=auth
    )
    assert resend.status_code == 409, resend.text


async def test_a_confirmation_after_delivery_unconfirmed_makes_it_confirmed(
    client: httpx.AsyncClient, telnyx_school: TelnyxSchool, sessionmaker: Sessions
) -> None:
    campaign_id, recipient_id = await sent_recipient(client, telnyx_school, sessionmaker)
    for status in ("delivery_unconfirmed", "delivered", "delivery_unconfirmed"):
        body = telnyx_receipt(MESSAGE_ID, status)
        assert (await post_telnyx(client, telnyx_school.keys, body)).status_code == 200
    detail = await recipient_detail(client, telnyx_school.auth, campaign_id, recipient_id)
    assert (detail["status"], detail["delivery_confirmed"]) == ("delivered", True)
    assert detail["attempts_history"][0]["status"] == "delivered"


async def test_expired_is_a_soft_sending_error_rescheduled(
    client: httpx.AsyncClient, telnyx_school: TelnyxSchool, sessionmaker: Sessions
) -> None:
    """docs/providers.md §2.2: Scheduled, Re-attempting Delivery, its next attempt due as the
    retry policy says (the retry itself: tests/delivery/test_telnyx_statuses.py)."""
    campaign_id, recipient_id = await sent_recipient(client, telnyx_school, sessionmaker)
    before = datetime.now(UTC)
    body = telnyx_receipt(MESSAGE_ID, "expired", code="40014")
    assert (await post_telnyx(client, telnyx_school.keys, body)).status_code == 200
    detail = await recipient_detail(client, telnyx_school.auth, campaign_id, recipient_id)
    assert (detail["status"], detail["status_label"]) == ("scheduled", "Scheduled")
    assert detail["failed_reason"]["code"] == "reattempting"
    assert detail["failed_reason"]["provider_error_code"] == "40014"
    assert detail["delivery_confirmed"] is None
    assert detail["next_attempt_at"] is not None
    assert datetime.fromisoformat(detail["next_attempt_at"]) > before  # backoff: later
    assert detail["attempts_history"][0]["status"] == "expired"

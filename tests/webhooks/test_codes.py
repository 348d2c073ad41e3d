"""Every row of both code tables, through the webhooks: a failure receipt for a recipient
with a recorded attempt ends with the status, reason and definition of its row (a soft code
on an active campaign: Scheduled, Re-attempting Delivery, with its next attempt due)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import httpx

from app.sending import reasons
from tests.support.api import launched, people, recipients
from tests.support.webhooks import (
    TWILIO_STATUS,
    Sessions,
    TelnyxSchool,
    TwilioSchool,
    new_message_sid,
    post_telnyx,
    post_twilio,
    record_attempt,
    status_form,
    telnyx_receipt,
)


def table(provider: str) -> dict[str, dict[str, Any]]:
    text = resources.files("app.providers").joinpath(provider, "codes.json").read_text("utf-8")
    rows: dict[str, dict[str, Any]] = json.loads(text)
    return rows


def expected(code: str | None, row: dict[str, Any] | None) -> dict[str, Any]:
    """The recipient's status and failed reason, as README, Delivery says, for a failure receipt."""
    if row is not None and row["soft"]:
        return {
            "status": "scheduled",
            "status_label": "Scheduled",
            "failed_reason": {
                "code": "reattempting",
                "label": "Re-attempting Delivery",
                "definition": "The message is queued and will be retried",
                "resendable": None,
                "provider_error_code": code,
            },
        }
    reason_code = row["reason"] if row is not None else "unknown"
    reason = reasons.get(reason_code)
    return {
        "status": "failed",
        "status_label": "Failed",
        "failed_reason": {
            "code": reason.code,
            "label": reason.label,
            "definition": reason.definitions[row["definition"] if row else 0],
            "resendable": reason.resendable,
            "provider_error_code": code,
        },
    }


def phones(count: int) -> list[str]:
    return [f"+1201555{1000 + i:04d}" for i in range(count)]


async def check_all(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    campaign_id: str,
    cases: dict[str, tuple[str | None, dict[str, Any] | None]],
) -> None:
    """`cases`: phone → (code, row)."""
    mismatches = []
    for recipient in await recipients(client, auth, campaign_id):
        code, row = cases[recipient["phone"]]
        want = expected(code, row)
        got = {name: recipient[name] for name in want}
        if got != want:
            mismatches.append((code, got, want))
        scheduled = want["status"] == "scheduled"
        assert (recipient["next_attempt_at"] is not None) is scheduled, (code, recipient)
    assert mismatches == []


async def test_every_twilio_code_in_a_receipt(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    rows = table("twilio")
    codes: list[str | None] = [*rows, "39999", None]  # an unknown code, and none at all
    numbers = phones(len(codes))
    campaign = await launched(client, twilio_school.auth, people(*numbers))
    cases = {}
    account = twilio_school.account
    by_phone = {r["phone"]: r for r in await recipients(client, twilio_school.auth, campaign["id"])}
    for code, phone in zip(codes, numbers, strict=True):
        cases[phone] = (code, rows.get(code) if code else None)
        sid = new_message_sid()
        await record_attempt(sessionmaker, by_phone[phone]["id"], "twilio", sid)
        sent = await post_twilio(
            client, TWILIO_STATUS, status_form(account, sid, "sent"), account.auth_token
        )
        assert sent.status_code == 200, sent.text
        # Twilio says `failed` for codes met before the carrier, `undelivered` after.
        status = "failed" if code in ("30001", "30002", "30010") else "undelivered"
        failure = await post_twilio(
            client, TWILIO_STATUS, status_form(account, sid, status, code), account.auth_token
        )
        assert failure.status_code == 200, failure.text
    await check_all(client, twilio_school.auth, campaign["id"], cases)


async def test_every_telnyx_code_in_a_receipt(
    client: httpx.AsyncClient, telnyx_school: TelnyxSchool, sessionmaker: Sessions
) -> None:
    rows = table("telnyx")
    codes: list[str | None] = [*rows, "49999", None]
    numbers = phones(len(codes))
    campaign = await launched(client, telnyx_school.auth, people(*numbers))
    cases = {}
    by_phone = {r["phone"]: r for r in await recipients(client, telnyx_school.auth, campaign["id"])}
    for i, (code, phone) in enumerate(zip(codes, numbers, strict=True)):
        cases[phone] = (code, rows.get(code) if code else None)
        message_id = f"40317a6e-0000-4000-8000-{i:012d}"
        await record_attempt(sessionmaker, by_phone[phone]["id"], "telnyx", message_id)
        sent = await post_telnyx(client, telnyx_school.keys, telnyx_receipt(message_id, "sent"))
        assert sent.status_code == 200, sent.text
        status = "sending_failed" if i % 2 else "delivery_failed"
        failure = await post_telnyx(
            client, telnyx_school.keys, telnyx_receipt(message_id, status, code=code)
        )
        assert failure.status_code == 200, failure.text
    await check_all(client, telnyx_school.auth, campaign["id"], cases)

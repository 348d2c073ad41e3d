"""POST /v1/webhooks/twilio/status: the signature as Twilio computes it (the documented
vector, the official RequestValidator), refusals that change nothing, and a receipt applied."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from app.providers.twilio.signature import compute_signature
from tests.support.api import launched, make_school, people, recipients
from tests.support.webhooks import (
    PUBLIC_BASE,
    TWILIO_INBOUND,
    TWILIO_STATUS,
    Sessions,
    TwilioAccount,
    TwilioSchool,
    add_twilio_school,
    assert_problem,
    count_receipts,
    new_message_sid,
    post_twilio,
    recipient_detail,
    record_attempt,
    status_form,
    stored_receipts,
    twilio_signature,
)

# docs/providers.md §1.4, Twilio's worked example.
DOC_URL = "https://example.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675310"),
    ("Digits", "1234"),
    ("From", "+14158675310"),
    ("To", "+18005551212"),
]
DOC_TOKEN = "12345"
DOC_SIGNATURE = "L/OH5YylLD5NRKLltdqwSvS0BnU="


async def sent_recipient(
    client: httpx.AsyncClient, school: TwilioSchool, sessions: Sessions, phone: str
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A launched campaign of one recipient whose message Twilio accepted: (campaign,
    recipient, message sid)."""
    campaign = await launched(client, school.auth, people(phone))
    recipient = (await recipients(client, school.auth, campaign["id"]))[0]
    sid = new_message_sid()
    await record_attempt(sessions, recipient["id"], "twilio", sid)
    return campaign, recipient, sid


def test_documented_vector_and_the_official_validator_agree() -> None:
    validator = RequestValidator(DOC_TOKEN)
    assert validator.compute_signature(DOC_URL, dict(DOC_PARAMS)) == DOC_SIGNATURE
    assert compute_signature(DOC_URL, DOC_PARAMS, DOC_TOKEN) == DOC_SIGNATURE
    assert validator.validate(DOC_URL, dict(DOC_PARAMS), DOC_SIGNATURE)


async def test_signed_status_callback_is_applied(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    campaign, recipient, sid = await sent_recipient(
        client, twilio_school, sessionmaker, "+12015550123"
    )
    account = twilio_school.account
    response = await post_twilio(
        client, TWILIO_STATUS, status_form(account, sid, "sent"), account.auth_token
    )
    assert response.status_code == 200, response.text
    assert response.content == b""
    detail = await recipient_detail(client, twilio_school.auth, campaign["id"], recipient["id"])
    assert (detail["status"], detail["status_label"]) == ("pending", "Pending")
    assert detail["attempts_history"][0]["status"] == "sent"

    delivered = [*status_form(account, sid, "delivered"), ("RawDlrDoneDate", "2611271005")]
    response = await post_twilio(client, TWILIO_STATUS, delivered, account.auth_token)
    assert response.status_code == 200
    detail = await recipient_detail(client, twilio_school.auth, campaign["id"], recipient["id"])
    assert detail["status"] == "delivered"
    campaign_now = (
        await client.get(f"/v1/campaigns/{campaign['id']}", headers=twilio_school.auth)
    ).json()
    assert campaign_now["status"] == "complete"
    assert [r.applied_at is not None for r in await stored_receipts(sessionmaker, sid)] == [
        True,
        True,
    ]


@pytest.mark.parametrize(
    ("query", "extra"),
    [
        ("", []),
        ("foo=1&bar=2", []),  # the query string is part of what Twilio signs
        ("a=%2F%20b", []),  # as sent, not re-encoded
        ("", [("Extra", ""), ("Extra", "b"), ("Extra", "a")]),  # blank and repeated names
        ("", [("Body", "Café ✓ + 100% & more=yes")]),  # UTF-8, '+', '&', '=' in a value
        ("", [("Z", "z"), ("a", "A"), ("_", "x")]),  # case-sensitive name order
    ],
)
async def test_official_validator_signatures_verify_over_the_endpoint(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    query: str,
    extra: list[tuple[str, str]],
) -> None:
    _, _, sid = await sent_recipient(client, twilio_school, sessionmaker, "+12015550123")
    account = twilio_school.account
    form = status_form(account, sid, "sent") + extra
    response = await post_twilio(client, TWILIO_STATUS, form, account.auth_token, query=query)
    assert response.status_code == 200, response.text
    assert len(await stored_receipts(sessionmaker, sid)) == 1


async def test_url_signed_with_the_default_port_verifies(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    _, _, sid = await sent_recipient(client, twilio_school, sessionmaker, "+12015550123")
    account = twilio_school.account
    response = await post_twilio(
        client,
        TWILIO_STATUS,
        status_form(account, sid, "sent"),
        account.auth_token,
        signed_url="https://campanile.test:443" + TWILIO_STATUS,
    )
    assert response.status_code == 200, response.text


def _signed_then(
    change: str, account: TwilioAccount, sid: str
) -> tuple[list[tuple[str, str]], dict[str, str], str]:
    """A callback whose signature was made, then `change` applied: (form, headers, query)."""
    form = status_form(account, sid, "delivered")
    url = PUBLIC_BASE + TWILIO_STATUS
    signature = twilio_signature(url, form, account.auth_token)
    headers = {"X-Twilio-Signature": signature}
    query = ""
    if change == "no signature":
        headers = {}
    elif change == "empty signature":
        headers = {"X-Twilio-Signature": ""}
    elif change == "signature of another token":
        headers = {"X-Twilio-Signature": twilio_signature(url, form, "not-the-token")}
    elif change == "a value changed":
        form = [(n, "undelivered" if n == "MessageStatus" else v) for n, v in form]
    elif change == "a parameter added":
        form = [*form, ("ErrorCode", "30003")]
    elif change == "a parameter removed":
        form = [(n, v) for n, v in form if n != "ApiVersion"]
    elif change == "another URL":
        query = "x=1"
    elif change == "unknown AccountSid":
        form = [(n, "AC" + "f" * 32 if n == "AccountSid" else v) for n, v in form]
        headers = {"X-Twilio-Signature": twilio_signature(url, form, account.auth_token)}
    elif change == "no AccountSid":
        form = [(n, v) for n, v in form if n != "AccountSid"]
        headers = {"X-Twilio-Signature": twilio_signature(url, form, account.auth_token)}
    return form, headers, query


@pytest.mark.parametrize(
    "change",
    [
        "no signature",
        "empty signature",
        "signature of another token",
        "a value changed",
        "a parameter added",
        "a parameter removed",
        "another URL",
        "unknown AccountSid",
        "no AccountSid",
    ],
)
async def test_refused_with_403_and_nothing_changes(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions, change: str
) -> None:
    campaign, recipient, sid = await sent_recipient(
        client, twilio_school, sessionmaker, "+12015550123"
    )
    before = await recipient_detail(client, twilio_school.auth, campaign["id"], recipient["id"])
    receipts_before = await count_receipts(sessionmaker)
    form, headers, query = _signed_then(change, twilio_school.account, sid)
    response = await client.post(
        TWILIO_STATUS + (f"?{query}" if query else ""),
        content=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )
    assert_problem(response, 403)
    # The same answer whatever was wrong: no oracle for account ids.
    assert response.json()["detail"] == (
        "The webhook is not signed by a provider account of this service."
    )
    assert await count_receipts(sessionmaker) == receipts_before
    after = await recipient_detail(client, twilio_school.auth, campaign["id"], recipient["id"])
    assert after == before


async def test_body_that_is_not_utf8_is_refused(
    client: httpx.AsyncClient, twilio_school: TwilioSchool
) -> None:
    response = await client.post(
        TWILIO_STATUS,
        content=b"AccountSid=" + twilio_school.account.account_sid.encode() + b"&Body=%FF%FE",
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"},
    )
    assert_problem(response, 403)


async def test_account_of_a_provider_other_than_twilio_is_unknown(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    """Only `twilio` accounts verify Twilio webhooks."""
    _, auth = await make_school(client, name="Simulated")
    await client.put("/v1/school/provider", json={"provider": "simulator"}, headers=auth)
    account = TwilioAccount(account_sid="AC" + "0" * 32)
    response = await post_twilio(
        client, TWILIO_STATUS, status_form(account, new_message_sid(), "sent"), "anything"
    )
    assert_problem(response, 403)


@pytest.mark.parametrize(
    "drop",
    [
        ("MessageSid", "SmsSid"),
        ("MessageStatus", "SmsStatus"),
    ],
)
async def test_signed_but_malformed_is_400_and_nothing_changes(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    drop: tuple[str, str],
) -> None:
    _, _, sid = await sent_recipient(client, twilio_school, sessionmaker, "+12015550123")
    account = twilio_school.account
    form = [(n, v) for n, v in status_form(account, sid, "sent") if n not in drop]
    before = await count_receipts(sessionmaker)
    response = await post_twilio(client, TWILIO_STATUS, form, account.auth_token)
    assert_problem(response, 400)
    assert await count_receipts(sessionmaker) == before


async def test_blank_message_status_is_malformed(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    account = twilio_school.account
    form = [
        (n, "" if n in ("MessageStatus", "SmsStatus") else v)
        for n, v in status_form(account, new_message_sid(), "sent")
    ]
    response = await post_twilio(client, TWILIO_STATUS, form, account.auth_token)
    assert_problem(response, 400)


async def test_legacy_sms_names_are_read(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    campaign, recipient, sid = await sent_recipient(
        client, twilio_school, sessionmaker, "+12015550123"
    )
    account = twilio_school.account
    form = [
        (n, v)
        for n, v in status_form(account, sid, "sent")
        if n not in ("MessageSid", "MessageStatus")
    ]
    response = await post_twilio(client, TWILIO_STATUS, form, account.auth_token)
    assert response.status_code == 200, response.text
    detail = await recipient_detail(client, twilio_school.auth, campaign["id"], recipient["id"])
    assert detail["status"] == "pending"


async def test_schools_sharing_an_account_sid_each_verify_with_their_token(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    """Two schools name one Twilio account (one may hold a rotated token): a signature by
    either token verifies; a token neither holds does not."""
    first = await add_twilio_school(client, name="North")
    rotated = TwilioAccount(account_sid=first.account.account_sid, from_number="+15005550009")
    second = await add_twilio_school(client, rotated, name="South")
    for school in (first, second):
        _, _, sid = await sent_recipient(client, school, sessionmaker, "+12015550123")
        response = await post_twilio(
            client,
            TWILIO_STATUS,
            status_form(school.account, sid, "sent"),
            school.account.auth_token,
        )
        assert response.status_code == 200, response.text
    response = await post_twilio(
        client,
        TWILIO_STATUS,
        status_form(first.account, new_message_sid(), "sent"),
        "neither-token",
    )
    assert_problem(response, 403)


async def test_inbound_refusals(client: httpx.AsyncClient, twilio_school: TwilioSchool) -> None:
    account = twilio_school.account
    form = [("AccountSid", account.account_sid), ("From", "+12015550123"), ("Body", "STOP")]
    assert_problem(await post_twilio(client, TWILIO_INBOUND, form, "wrong-token"), 403)
    assert_problem(await post_twilio(client, TWILIO_INBOUND, form, None), 403)
    # Signed, but neither MessageSid nor To: 400.
    assert_problem(await post_twilio(client, TWILIO_INBOUND, form, account.auth_token), 400)
    listed = await client.get("/v1/opt-outs", headers=twilio_school.auth)
    assert listed.json()["items"] == []

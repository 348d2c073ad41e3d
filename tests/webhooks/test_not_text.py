"""Every webhook refuses a field that is not text (README, Webhooks): a NUL byte (raw,
%00 in a Twilio form, \\u0000 in Telnyx JSON), a lone surrogate or a body that is not UTF-8 is
answered 400 (or 403) as problem+json, never 500, and nothing is stored: no receipt, no
opt-out, no change to the recipient."""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest

from tests.support.api import launched, people, recipients
from tests.support.webhooks import (
    TWILIO_INBOUND,
    TWILIO_STATUS,
    Sessions,
    TelnyxSchool,
    TwilioSchool,
    assert_problem,
    count_receipts,
    inbound_form,
    new_message_sid,
    opt_out_rows,
    post_telnyx,
    post_twilio,
    record_attempt,
    status_form,
    telnyx_inbound,
    telnyx_receipt,
)

PARENT = "+12015550123"
FORM = "application/x-www-form-urlencoded"


def with_nul(form: list[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    """The form with a NUL byte inside the value of `name`."""
    return [(key, value + "\x00x" if key == name else value) for key, value in form]


@pytest.mark.parametrize("field", ["AccountSid", "MessageSid", "MessageStatus", "ErrorCode"])
async def test_twilio_status_callback_with_a_nul_byte(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions, field: str
) -> None:
    """Signed by the school's account (the fast path answers this endpoint): 400."""
    account = twilio_school.account
    campaign = await launched(client, twilio_school.auth, people(PARENT))
    [recipient] = await recipients(client, twilio_school.auth, campaign["id"])
    sid = new_message_sid()
    await record_attempt(sessionmaker, recipient["id"], "twilio", sid)
    before = await count_receipts(sessionmaker)
    form = with_nul(status_form(account, sid, "undelivered", "30003"), field)
    response = await post_twilio(client, TWILIO_STATUS, form, account.auth_token)
    assert_problem(response, 400)
    assert await count_receipts(sessionmaker) == before
    [after] = await recipients(client, twilio_school.auth, campaign["id"])
    assert (after["status"], after["failed_reason"]) == ("queued", None)


@pytest.mark.parametrize("path", [TWILIO_STATUS, TWILIO_INBOUND])
@pytest.mark.parametrize("nul", [b"%00", b"\x00"])
async def test_twilio_account_sid_with_a_nul_byte_never_reaches_the_database(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    path: str,
    nul: bytes,
) -> None:
    """The bug found by fuzzing: an AccountSid holding a NUL was looked up in PostgreSQL and
    answered 500. Percent-encoded or raw, it is refused first."""
    sid = twilio_school.account.account_sid.encode()
    before = await count_receipts(sessionmaker)
    body = (
        b"AccountSid="
        + sid
        + nul
        + b"&MessageSid="
        + new_message_sid().encode()
        + b"&MessageStatus=sent&From=%2B12015550123&To=%2B15005550006&Body=STOP"
    )
    response = await client.post(
        path, content=body, headers={"Content-Type": FORM, "X-Twilio-Signature": "x"}
    )
    assert_problem(response, 400)
    assert await count_receipts(sessionmaker) == before
    assert await opt_out_rows(sessionmaker, twilio_school.id) == []


@pytest.mark.parametrize("field", ["Body", "From", "To", "MessageSid", "AccountSid"])
async def test_twilio_inbound_with_a_nul_byte(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions, field: str
) -> None:
    account = twilio_school.account
    campaign = await launched(client, twilio_school.auth, people(PARENT))
    form = with_nul(inbound_form(account, PARENT, "STOP"), field)
    response = await post_twilio(client, TWILIO_INBOUND, form, account.auth_token)
    assert_problem(response, 400)
    assert await opt_out_rows(sessionmaker, twilio_school.id) == []
    [recipient] = await recipients(client, twilio_school.auth, campaign["id"])
    assert recipient["status"] == "queued"


@pytest.mark.parametrize("path", [TWILIO_STATUS, TWILIO_INBOUND])
async def test_twilio_form_that_is_not_utf8(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions, path: str
) -> None:
    """Raw or percent-encoded, bytes that are not UTF-8 cannot be what Twilio signed: 403."""
    sid = quote(twilio_school.account.account_sid).encode()
    before = await count_receipts(sessionmaker)
    for tail in (b"&Body=%FF%FE", b"&Body=\xff", b"&Body=%ED%A0%80"):  # the last: a surrogate
        response = await client.post(
            path,
            content=b"AccountSid=" + sid + b"&From=%2B12015550123" + tail,
            headers={"Content-Type": FORM, "X-Twilio-Signature": "x"},
        )
        assert_problem(response, 403)
    assert await count_receipts(sessionmaker) == before
    assert await opt_out_rows(sessionmaker, twilio_school.id) == []


def _replace(body: bytes, old: str, new: str) -> bytes:
    """The JSON body with the string `old` (as JSON writes it) replaced by raw JSON `new`."""
    text = body.decode()
    assert json.dumps(old) in text
    return text.replace(json.dumps(old), new).encode()


@pytest.mark.parametrize(
    "bad",
    [
        '"40317a6e-0000-4000-8000-000000000001\\u0000"',  # NUL
        '"40317a6e-0000-4000-8000-000000000001\\ud800"',  # a lone surrogate
    ],
)
async def test_telnyx_receipt_whose_field_is_not_text(
    client: httpx.AsyncClient, telnyx_school: TelnyxSchool, sessionmaker: Sessions, bad: str
) -> None:
    message_id = "40317a6e-0000-4000-8000-000000000001"
    campaign = await launched(client, telnyx_school.auth, people(PARENT))
    [recipient] = await recipients(client, telnyx_school.auth, campaign["id"])
    await record_attempt(sessionmaker, recipient["id"], "telnyx", message_id)
    before = await count_receipts(sessionmaker)
    body = _replace(telnyx_receipt(message_id, "delivery_failed", code="40001"), message_id, bad)
    response = await post_telnyx(client, telnyx_school.keys, body)
    assert_problem(response, 400)
    # In the error code too.
    body = _replace(
        telnyx_receipt(message_id, "delivery_failed", code="40001"), "40001", '"4000\\u00001"'
    )
    response = await post_telnyx(client, telnyx_school.keys, body)
    assert_problem(response, 400)
    assert await count_receipts(sessionmaker) == before
    [after] = await recipients(client, telnyx_school.auth, campaign["id"])
    assert (after["status"], after["failed_reason"]) == ("queued", None)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("STOP", '"STOP\\u0000"'),
        ("STOP", '"STOP\\udc00"'),
        (PARENT, '"+1201555\\u00000123"'),
    ],
)
async def test_telnyx_inbound_whose_field_is_not_text(
    client: httpx.AsyncClient,
    telnyx_school: TelnyxSchool,
    sessionmaker: Sessions,
    old: str,
    new: str,
) -> None:
    body = _replace(telnyx_inbound(PARENT, telnyx_school.from_number, "STOP"), old, new)
    response = await post_telnyx(client, telnyx_school.keys, body)
    assert_problem(response, 400)
    assert await opt_out_rows(sessionmaker, telnyx_school.id) == []


@pytest.mark.parametrize("bad", [b"\xff", b"\xed\xa0\x80"])  # not UTF-8; an encoded surrogate
async def test_telnyx_body_that_is_not_utf8(
    client: httpx.AsyncClient, telnyx_school: TelnyxSchool, sessionmaker: Sessions, bad: bytes
) -> None:
    """Signed (Telnyx signs the raw bytes), but not text: 400."""
    body = telnyx_inbound(PARENT, telnyx_school.from_number, "STOP").replace(b"STOP", b"STOP" + bad)
    response = await post_telnyx(client, telnyx_school.keys, body)
    assert_problem(response, 400)
    assert await opt_out_rows(sessionmaker, telnyx_school.id) == []


async def test_a_literal_backslash_u_is_still_text(
    client: httpx.AsyncClient, telnyx_school: TelnyxSchool, sessionmaker: Sessions
) -> None:
    """Text that merely spells \\u0000 (an escaped backslash) is ordinary text."""
    body = telnyx_inbound(PARENT, telnyx_school.from_number, "see \\u0000 STOP")
    response = await post_telnyx(client, telnyx_school.keys, body)
    assert response.status_code == 200, response.text
    body = telnyx_inbound(PARENT, telnyx_school.from_number, "Stop \u00e9\u4e2d")
    response = await post_telnyx(client, telnyx_school.keys, body)
    assert response.status_code == 200, response.text

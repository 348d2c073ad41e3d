"""A signed receipt whose id, status or error code is longer than the receipts inbox keeps
(app/models/receipt.py) is a 400 and nothing is stored, not a 500 from the INSERT (found by
the fuzzer, tests/test_openapi_fuzz.py); the longest it keeps are stored."""

from __future__ import annotations

import httpx
import pytest

from app.providers.callbacks import TWILIO_STATUS
from tests.support.webhooks import (
    Sessions,
    TelnyxSchool,
    TwilioSchool,
    assert_problem,
    count_receipts,
    new_message_sid,
    post_telnyx,
    post_twilio,
    status_form,
    telnyx_receipt,
)

LEGACY = {"MessageSid": "SmsSid", "MessageStatus": "SmsStatus"}


def _twilio_form(school: TwilioSchool, name: str, value: str) -> list[tuple[str, str]]:
    form = status_form(school.account, new_message_sid(), "undelivered", code="30003")
    return [(n, value if name in (n, LEGACY.get(n)) else v) for n, v in form]


@pytest.mark.parametrize(
    ("name", "kept"), [("MessageSid", 64), ("MessageStatus", 32), ("ErrorCode", 16)]
)
async def test_twilio_fields_longer_than_kept_are_malformed(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    name: str,
    kept: int,
) -> None:
    token = twilio_school.account.auth_token
    before = await count_receipts(sessionmaker)
    form = _twilio_form(twilio_school, name, "9" * (kept + 1))
    assert_problem(await post_twilio(client, TWILIO_STATUS, form, token), 400)
    assert await count_receipts(sessionmaker) == before
    # Spaces around are not counted: the fields are read stripped.
    form = _twilio_form(twilio_school, name, f"  {'9' * kept}  ")
    response = await post_twilio(client, TWILIO_STATUS, form, token)
    assert response.status_code == 200, response.text
    assert await count_receipts(sessionmaker) == before + 1


@pytest.mark.parametrize(
    "body",
    [
        telnyx_receipt("m" * 65, "delivered"),
        telnyx_receipt("m-1", "d" * 33),
        telnyx_receipt("m-1", "delivery_failed", code="4" * 17),
        telnyx_receipt("m-1", "delivered", event_id="e" * 129),
    ],
)
async def test_telnyx_fields_longer_than_kept_are_malformed(
    client: httpx.AsyncClient, telnyx_school: TelnyxSchool, sessionmaker: Sessions, body: bytes
) -> None:
    response = await post_telnyx(client, telnyx_school.keys, body)
    assert_problem(response, 400)
    assert await count_receipts(sessionmaker) == 0

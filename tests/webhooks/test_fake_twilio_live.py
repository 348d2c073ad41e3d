"""The fake Twilio's status callbacks (tests/fakes/twilio.py) posted to the service itself:
the live server's Twilio status webhook takes them (signature over its PUBLIC_BASE_URL, the
path and the query string) and stores one receipt per event, duplicates and all."""

from __future__ import annotations

import httpx

from app.providers.base import OutboundMessage
from app.providers.twilio.client import TwilioProvider
from tests.fakes.twilio import FakeTwilio, Life
from tests.support.webhooks import TWILIO_STATUS, LiveServer, TwilioAccount, add_twilio_school

TO = "+12015550177"


async def send_through(fake: FakeTwilio, callback: str) -> str:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        provider = TwilioProvider(
            client,
            account_sid=fake.account_sid,
            auth_token=fake.auth_token,
            from_number=fake.from_number,
            api_base=fake.url,
        )
        result = await provider.send(OutboundMessage(TO, "Hi", status_callback=callback))
    assert result.provider_message_id is not None, result
    return result.provider_message_id


async def test_the_service_takes_the_fakes_callbacks(
    live: httpx.AsyncClient, live_server: LiveServer
) -> None:
    account = TwilioAccount()
    await add_twilio_school(live, account, name="Fake Twilio High")
    callback = f"{live_server.url}{TWILIO_STATUS}?attempt=123-abcd"
    life = Life.undelivered(30003).late("sent", 0.2).repeat("undelivered")
    async with FakeTwilio(
        account_sid=account.account_sid,
        auth_token=account.auth_token,
        from_number=account.from_number,
        callbacks=life,
    ) as fake:
        sid = await send_through(fake, callback)
        await fake.settled()
        # Signed with another token: the service refuses them, so it did check.
        fake.auth_token = "not-the-schools-token"
        forged = await send_through(fake, callback)
        await fake.settled()

    assert [(p.status, p.answer) for p in fake.posted_for(sid)] == [
        ("undelivered", 200),
        ("undelivered", 200),
        ("sent", 200),
    ]
    assert [(p.status, p.answer) for p in fake.posted_for(forged)] == [
        ("undelivered", 403),
        ("undelivered", 403),
        ("sent", 403),
    ]
    rows = await live_server.fetch(
        """SELECT provider_message_id, provider_status, error_code FROM receipts
           WHERE provider_message_id = ANY($1) ORDER BY id""",
        [sid, forged],
    )
    # One receipt per event: the repeated `undelivered` is the same event.
    assert [tuple(row) for row in rows] == [(sid, "undelivered", "30003"), (sid, "sent", None)]

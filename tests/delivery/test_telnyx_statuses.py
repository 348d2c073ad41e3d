"""Telnyx's final statuses through the delivery loop (docs/providers.md §2.2): the real Engine hands
messages to a Telnyx that answers over HTTP (a stand-in for its Messages API, on the
engine's own HTTP client), and its receipts come over the signed webhook.

`expired` is a soft `sending_error`: Scheduled, then handed over again once due, and
delivered by the retry. `delivery_unconfirmed` is a delivery the carrier did not confirm:
Delivered with `delivery_confirmed: false`, and the campaign completes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from app.delivery.engine import Engine
from tests.support.api import apply_receipts, launched, make_school, people
from tests.support.delivery import campaign_of, make_due, one, phone
from tests.support.webhooks import Sessions, TelnyxKeys, post_telnyx, telnyx_receipt

API_BASE = "https://telnyx.test"


@dataclass
class Telnyx:
    """Telnyx's `POST /v2/messages`: every create accepted (`queued`), ids in order."""

    sent: list[tuple[str, str]] = field(default_factory=list)  # (to, message id)

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert (request.method, str(request.url)) == ("POST", f"{API_BASE}/v2/messages")
        to = json.loads(request.content)["to"]
        message_id = f"40317a6e-0000-4000-8000-{len(self.sent):012d}"
        self.sent.append((to, message_id))
        data = {"id": message_id, "to": [{"phone_number": to, "status": "queued"}]}
        return httpx.Response(200, json={"data": data})

    def ids_to(self, to: str) -> list[str]:
        return [message_id for number, message_id in self.sent if number == to]


@pytest.fixture
def telnyx() -> Telnyx:
    return Telnyx()


@pytest.fixture
async def http(telnyx: Telnyx) -> AsyncIterator[httpx.AsyncClient]:
    """The engine's outbound client, its requests answered by `telnyx`."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(telnyx.handle)) as client:
        yield client


@dataclass(frozen=True)
class School:
    auth: dict[str, str]
    keys: TelnyxKeys


@pytest.fixture
async def school(client: httpx.AsyncClient) -> School:
    """A school on Telnyx that may send at any hour."""
    _, auth = await make_school(client, sending_window=None)
    keys = TelnyxKeys()
    account = {
        "provider": "telnyx",
        "api_key": "KEY0123456789",
        "public_key": keys.public,
        "from_number": "+15005550007",
        "api_base": API_BASE,
    }
    response = await client.put("/v1/school/provider", json=account, headers=auth)
    assert response.status_code == 200, response.text
    return School(auth, keys)


async def telnyx_says(
    client: httpx.AsyncClient,
    sessionmaker: Sessions,
    school: School,
    message_id: str,
    *statuses: str,
) -> None:
    """Telnyx posts signed webhooks for the message; the receipt applier applies them."""
    for status in statuses:
        body = telnyx_receipt(message_id, status)
        response = await post_telnyx(client, school.keys, body)
        assert response.status_code == 200, response.text
    await apply_receipts(sessionmaker)


async def test_expired_is_rescheduled_then_handed_over_again(
    client: httpx.AsyncClient,
    sessionmaker: Sessions,
    school: School,
    telnyx: Telnyx,
    delivery: Engine,
) -> None:
    number = phone(0)
    cid = (await launched(client, school.auth, people(number)))["id"]
    assert await delivery.run_once() == 1
    [first] = telnyx.ids_to(number)
    await telnyx_says(client, sessionmaker, school, first, "sent", "expired")

    scheduled = await one(client, school.auth, cid, number)
    assert (scheduled["status"], scheduled["status_label"]) == ("scheduled", "Scheduled")
    assert scheduled["failed_reason"]["code"] == "reattempting"
    assert scheduled["delivery_confirmed"] is None
    assert scheduled["next_attempt_at"] is not None
    assert await delivery.run_once() == 0  # not due before its backoff
    assert (await campaign_of(client, school.auth, cid))["status"] == "active"

    await make_due(sessionmaker, cid)
    assert await delivery.run_once() == 1
    first_again, second = telnyx.ids_to(number)
    assert first_again == first
    retried = await one(client, school.auth, cid, number)
    assert (retried["status"], retried["attempts"]) == ("queued", 2)
    assert [a["status"] for a in retried["attempts_history"]] == ["expired", "queued"]

    await telnyx_says(client, sessionmaker, school, second, "sent", "delivered")
    delivered = await one(client, school.auth, cid, number)
    assert (delivered["status"], delivered["delivery_confirmed"]) == ("delivered", True)
    assert delivered["failed_reason"] is None
    assert (await campaign_of(client, school.auth, cid))["status"] == "complete"


async def test_delivery_unconfirmed_completes_the_campaign(
    client: httpx.AsyncClient,
    sessionmaker: Sessions,
    school: School,
    telnyx: Telnyx,
    delivery: Engine,
) -> None:
    unconfirmed, confirmed = phone(0), phone(1)
    cid = (await launched(client, school.auth, people(unconfirmed, confirmed)))["id"]
    assert await delivery.run_once() == 2
    [a] = telnyx.ids_to(unconfirmed)
    [b] = telnyx.ids_to(confirmed)
    await telnyx_says(client, sessionmaker, school, a, "sent", "delivery_unconfirmed")
    await telnyx_says(client, sessionmaker, school, b, "sent", "delivered")

    first = await one(client, school.auth, cid, unconfirmed)
    assert (first["status"], first["delivery_confirmed"]) == ("delivered", False)
    assert first["failed_reason"] is None
    second = await one(client, school.auth, cid, confirmed)
    assert (second["status"], second["delivery_confirmed"]) == ("delivered", True)
    campaign = await campaign_of(client, school.auth, cid)
    assert campaign["status"] == "complete"
    assert campaign["counts"]["delivered"] == 2
    assert await delivery.run_once() == 0  # nothing is sent again
    assert len(telnyx.sent) == 2

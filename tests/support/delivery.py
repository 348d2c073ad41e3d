"""What the delivery tests share: reading what staff see over the API, making time pass
(in SQL only) and receipts arrive, launching a campaign on the fake Twilio."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import Response

from app.delivery import applier
from app.delivery import inbox as receipts
from app.kit.clock import utcnow
from app.kit.db import Inbox, unit_of_work
from app.models import Attempt, Recipient
from app.providers.callbacks import ATTEMPT, AttemptNames
from app.providers.twilio.events import parse_status_callback
from app.sending import reasons
from tests.fakes.twilio import FakeTwilio
from tests.support.api import apply_receipts, inbox_on, launched, people, recipients

CALLBACK = "https://campanile.test/v1/webhooks/twilio/status"
BODY = "Hi {first_name}, school is closed tomorrow."
Sessions = async_sessionmaker[AsyncSession]


def phone(n: int) -> str:
    return f"+1201555{100 + n:04d}"


def now() -> datetime:
    return datetime.now(UTC)


def at(value: str | None) -> datetime:
    assert value is not None
    return datetime.fromisoformat(value)


# -- reading what staff see ------------------------------------------------------------


async def by_phone(
    client: httpx.AsyncClient, auth: dict[str, str], campaign_id: str
) -> dict[str, dict[str, Any]]:
    return {r["phone"]: r for r in await recipients(client, auth, campaign_id)}


async def one(
    client: httpx.AsyncClient, auth: dict[str, str], campaign_id: str, number: str
) -> dict[str, Any]:
    """One recipient with its attempts_history, found by phone."""
    [item] = await recipients(client, auth, campaign_id, q=number)
    response = await client.get(f"/v1/campaigns/{campaign_id}/contacts/{item['id']}", headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def campaign_of(
    client: httpx.AsyncClient, auth: dict[str, str], campaign_id: str
) -> dict[str, Any]:
    response = await client.get(f"/v1/campaigns/{campaign_id}", headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def reason(code: str, provider_error_code: str | None, definition: int = 0) -> dict[str, Any]:
    """A failed_reason as the API shows it, from the catalog."""
    entry = reasons.get(code)
    return {
        "code": code,
        "label": entry.label,
        "definition": entry.definitions[definition],
        "resendable": entry.resendable,
        "provider_error_code": provider_error_code,
    }


REATTEMPTING_LABEL = "Re-attempting Delivery"


# -- making time pass and receipts arrive ----------------------------------------------


async def make_due(sessionmaker: Sessions, campaign_id: str, **values: Any) -> None:
    """Time passes: every recipient of the campaign with an attempt due is due now."""
    async with unit_of_work(sessionmaker) as session:
        await session.execute(
            update(Recipient)
            .where(
                Recipient.campaign_id == uuid.UUID(campaign_id),
                Recipient.next_attempt_at.is_not(None),
            )
            .values(next_attempt_at=now(), **values)
        )


async def receipt(
    sessionmaker: Sessions, sid: str, status: str, error_code: str | None = None
) -> str:
    """A Twilio status callback for `sid`, kept as the webhook keeps it, then applied as
    the receipt applier would: `applied` or `stale`, else `duplicate` (the same event came
    before) or `waiting` (stored; its message id is not recorded yet)."""
    form = {"MessageSid": sid, "MessageStatus": status, "AccountSid": "AC" + "f" * 32}
    if error_code:
        form["ErrorCode"] = error_code
    if not await receipts.keep(inbox_on(sessionmaker), parse_status_callback(form)):
        return "duplicate"
    results = await apply_receipts(sessionmaker)
    return results[-1].value if results else "waiting"


def named_in(url: str | None, names: AttemptNames) -> int | None:
    """The attempt a status callback URL names (None if it names none of ours), once its
    base is checked to be the status callback's."""
    assert url is not None
    base, _, query = url.partition("?")
    assert base == CALLBACK
    return names.read(dict(parse_qsl(query)).get(ATTEMPT))


async def attempt_holding(sessionmaker: Sessions, sid: str) -> int | None:
    """The id of the attempt that holds message `sid`, if one does."""
    async with unit_of_work(sessionmaker) as session:
        found = await session.scalar(select(Attempt.id).where(Attempt.provider_message_id == sid))
    return found


async def committed_receipt(
    sessionmaker: Sessions, sid: str, status: str, error_code: str | None = None
) -> list[applier.Result]:
    """A status callback kept as the webhook keeps it, then applied as the worker's receipt
    applier does, each in a transaction of its own (a pool that commits: the tests under
    tests/delivery/committed): what it did."""
    form = {"MessageSid": sid, "MessageStatus": status, "AccountSid": "AC" + "f" * 32}
    if error_code:
        form["ErrorCode"] = error_code
    async with unit_of_work(sessionmaker) as session:
        raw = await (await session.connection()).get_raw_connection()

        @asynccontextmanager
        async def acquire() -> AsyncIterator[asyncpg.Connection]:
            yield raw.driver_connection

        assert await receipts.keep(Inbox(acquire), parse_status_callback(form))
    async with unit_of_work(sessionmaker) as session:
        return await applier.apply_stored(session)


async def launch(
    client: httpx.AsyncClient, school: TwilioSchool, *phones: str, body: str = BODY
) -> str:
    campaign = await launched(client, school.auth, people(*phones), body=body)
    assert campaign["status"] == "active"
    campaign_id: str = campaign["id"]
    return campaign_id


@dataclass
class TimedFakeTwilio(FakeTwilio):
    """The fake Twilio, also noting when each create call arrived."""

    # (UTC wall-clock time, To) of each create call: comparable with the send slots and
    # turns the engine reckons (`app.kit.clock.utcnow`).
    arrivals: list[tuple[datetime, str | None]] = field(default_factory=list)
    # ("create" | "list", To) in the order the calls arrived.
    events: list[tuple[str, str | None]] = field(default_factory=list)
    # (monotonic seconds, To) of each create call.
    creates: list[tuple[float, str | None]] = field(default_factory=list)

    async def _create(self, request: Request) -> Response:
        arrived, arrived_at = time.monotonic(), utcnow()
        form = dict(parse_qsl((await request.body()).decode("utf-8")))  # the body is cached
        self.arrivals.append((arrived_at, form.get("To")))
        self.events.append(("create", form.get("To")))
        self.creates.append((arrived, form.get("To")))
        return await super()._create(request)

    async def _list(self, request: Request) -> Response:
        self.events.append(("list", request.query_params.get("To")))
        return await super()._list(request)

    def reset(self) -> None:
        super().reset()
        self.arrivals.clear()
        self.events.clear()
        self.creates.clear()

    def sid_to(self, to: str) -> str:
        """The sid of the one message the fake holds for `to`."""
        [sid] = [m["sid"] for m in self.messages if m["to"] == to]
        return str(sid)


@dataclass(frozen=True)
class TwilioSchool:
    """A school sending through the fake Twilio: its id and API headers."""

    id: str
    auth: dict[str, str]


async def set_twilio_account(
    client: httpx.AsyncClient, auth: dict[str, str], fake: FakeTwilio, **extra: Any
) -> dict[str, Any]:
    """Point the school's provider account at the fake, over the API."""
    account = {
        "provider": "twilio",
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "from_number": fake.from_number,
        "api_base": fake.url,
        **extra,
    }
    response = await client.put("/v1/school/provider", json=account, headers=auth)
    assert response.status_code == 200, response.text
    assert "auth_token" not in response.json()
    body: dict[str, Any] = response.json()
    return body

"""Helpers for the webhook tests: signed Twilio forms and Telnyx events, attempts as the
delivery engine leaves them, and readers of the resulting state (not fixtures)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import FormData, UploadFile
from twilio.request_validator import RequestValidator

from app.kit.clock import utcnow
from app.models import Attempt, OptOut, Recipient, StoredReceipt
from tests.support.api import make_school
from tests.support.database import plain_url

# settings.public_base_url in tests/conftest.py: what Twilio signs, whatever the client's host.
PUBLIC_BASE = "https://campanile.test"
TWILIO_STATUS = "/v1/webhooks/twilio/status"
TWILIO_INBOUND = "/v1/webhooks/twilio/inbound"
TELNYX = "/v1/webhooks/telnyx"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
FORM = "application/x-www-form-urlencoded"

Sessions = async_sessionmaker[AsyncSession]


def new_account_sid() -> str:
    return "AC" + uuid.uuid4().hex


def new_message_sid() -> str:
    return "SM" + uuid.uuid4().hex


def twilio_signature(url: str, params: list[tuple[str, str]], token: str) -> str:
    """What Twilio would send: the official library's RequestValidator computes it."""
    multi: list[tuple[str, str | UploadFile]] = list(params)  # repeated names kept
    signature: str = RequestValidator(token).compute_signature(url, FormData(multi))
    return signature


@dataclass(frozen=True)
class TwilioAccount:
    account_sid: str = field(default_factory=new_account_sid)
    auth_token: str = field(default_factory=lambda: uuid.uuid4().hex)
    from_number: str = "+15005550006"


def status_form(
    account: TwilioAccount, sid: str, status: str, code: str | None = None
) -> list[tuple[str, str]]:
    """A status callback's parameters as Twilio posts them (docs/providers.md §1.3)."""
    form = [
        ("ApiVersion", "2010-04-01"),
        ("AccountSid", account.account_sid),
        ("From", account.from_number),
        ("To", "+12015550100"),
        ("MessageSid", sid),
        ("MessageStatus", status),
        ("SmsSid", sid),
        ("SmsStatus", status),
    ]
    if code is not None:
        form.append(("ErrorCode", code))
    return form


def inbound_form(
    account: TwilioAccount, sender: str, body: str, *, to: str | None = None
) -> list[tuple[str, str]]:
    return [
        ("ToCountry", "US"),
        ("SmsMessageSid", (sid := new_message_sid())),
        ("NumMedia", "0"),
        ("Body", body),
        ("SmsStatus", "received"),
        ("To", to or account.from_number),
        ("NumSegments", "1"),
        ("MessageSid", sid),
        ("AccountSid", account.account_sid),
        ("From", sender),
        ("ApiVersion", "2010-04-01"),
    ]


async def post_twilio(
    client: httpx.AsyncClient,
    path: str,
    params: list[tuple[str, str]],
    token: str | None,
    *,
    query: str = "",
    signed_url: str | None = None,
    base: str = PUBLIC_BASE,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST the form to `path`, signed with `token` (None: no signature header) over the
    public URL (or `signed_url`)."""
    target = path + (f"?{query}" if query else "")
    sent = {"Content-Type": FORM, **(headers or {})}
    if token is not None:
        sent["X-Twilio-Signature"] = twilio_signature(signed_url or base + target, params, token)
    return await client.post(target, content=urlencode(params), headers=sent)


class TelnyxKeys:
    """A Telnyx account's key pair: the public half is what the school configures."""

    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public = base64.b64encode(raw).decode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.private.sign(stamp.encode() + b"|" + body)
        return {
            "Content-Type": "application/json",
            "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
            "telnyx-timestamp": stamp,
        }


def telnyx_receipt(
    message_id: str,
    status: str,
    *,
    event_type: str | None = None,
    code: str | None = None,
    event_id: str | None = None,
) -> bytes:
    """A `message.sent` / `message.finalized` webhook body (docs/providers.md §2.2)."""
    kind = event_type or ("message.sent" if status in ("queued", "sending", "sent") else None)
    errors = [{"code": code, "title": "Delivery failed", "detail": "carrier"}] if code else []
    return json.dumps(
        {
            "data": {
                "event_type": kind or "message.finalized",
                "id": event_id or str(uuid.uuid4()),
                "occurred_at": "2026-11-27T10:00:00.000+00:00",
                "record_type": "event",
                "payload": {
                    "id": message_id,
                    "direction": "outbound",
                    "type": "SMS",
                    "to": [{"phone_number": "+12015550100", "status": status}],
                    "from": {"phone_number": "+15005550007"},
                    "errors": errors,
                    "messaging_profile_id": "profile-1",
                },
            },
            "meta": {"attempt": 1, "delivered_to": "https://campanile.test/v1/webhooks/telnyx"},
        }
    ).encode()


def telnyx_inbound(sender: str, to: str, text: str, profile: str = "profile-1") -> bytes:
    return json.dumps(
        {
            "data": {
                "event_type": "message.received",
                "id": str(uuid.uuid4()),
                "occurred_at": "2026-11-27T10:00:00.000+00:00",
                "record_type": "event",
                "payload": {
                    "id": str(uuid.uuid4()),
                    "direction": "inbound",
                    "type": "SMS",
                    "text": text,
                    "from": {"phone_number": sender, "carrier": "T-Mobile"},
                    "to": [{"phone_number": to, "status": "webhook_delivered"}],
                    "messaging_profile_id": profile,
                },
            },
            "meta": {"attempt": 1},
        }
    ).encode()


async def post_telnyx(
    client: httpx.AsyncClient, keys: TelnyxKeys, body: bytes, timestamp: int | None = None
) -> httpx.Response:
    return await client.post(TELNYX, content=body, headers=keys.headers(body, timestamp))


async def record_attempt(
    sessions: Sessions,
    recipient_id: int | str,
    provider: str,
    sid: str | None,
    status: str = "queued",
) -> int:
    """An attempt handed to the provider, as the delivery engine records it once the
    provider accepted the message: the recipient Still in Queue, nothing due. Its id."""
    async with sessions() as session:
        recipient = await session.get_one(Recipient, int(recipient_id))
        attempt = Attempt(
            recipient_id=recipient.id, provider=provider, provider_message_id=sid, status=status
        )
        session.add(attempt)
        recipient.attempts += 1
        recipient.status = "queued"
        recipient.next_attempt_at = None
        recipient.first_attempt_at = recipient.first_attempt_at or utcnow()
        await session.commit()
        return attempt.id


async def count_receipts(sessions: Sessions) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count(StoredReceipt.id)))).scalar_one())


async def stored_receipts(sessions: Sessions, sid: str) -> list[StoredReceipt]:
    async with sessions() as session:
        query = (
            select(StoredReceipt)
            .where(StoredReceipt.provider_message_id == sid)
            .order_by(StoredReceipt.id)
        )
        return list((await session.execute(query)).scalars())


async def opt_out_rows(sessions: Sessions, school_id: str) -> list[OptOut]:
    async with sessions() as session:
        query = select(OptOut).where(OptOut.school_id == uuid.UUID(school_id))
        return list((await session.execute(query)).scalars())


async def recipient_detail(
    client: httpx.AsyncClient, auth: dict[str, str], campaign_id: str, recipient_id: int | str
) -> dict[str, Any]:
    response = await client.get(
        f"/v1/campaigns/{campaign_id}/contacts/{recipient_id}", headers=auth
    )
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


def assert_problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status


@dataclass(frozen=True)
class TwilioSchool:
    id: str
    auth: dict[str, str]
    account: TwilioAccount


@dataclass(frozen=True)
class TelnyxSchool:
    id: str
    auth: dict[str, str]
    keys: TelnyxKeys
    from_number: str


async def add_twilio_school(
    client: httpx.AsyncClient, account: TwilioAccount | None = None, name: str = "Lincoln High"
) -> TwilioSchool:
    body, auth = await make_school(client, name=name)
    account = account or TwilioAccount()
    response = await client.put(
        "/v1/school/provider",
        json={
            "provider": "twilio",
            "account_sid": account.account_sid,
            "auth_token": account.auth_token,
            "from_number": account.from_number,
        },
        headers=auth,
    )
    assert response.status_code == 200, response.text
    return TwilioSchool(body["id"], auth, account)


async def add_telnyx_school(
    client: httpx.AsyncClient,
    keys: TelnyxKeys | None = None,
    from_number: str = "+15005550007",
    name: str = "Roosevelt Middle",
) -> TelnyxSchool:
    body, auth = await make_school(client, name=name)
    keys = keys or TelnyxKeys()
    response = await client.put(
        "/v1/school/provider",
        json={
            "provider": "telnyx",
            "api_key": "KEY" + uuid.uuid4().hex,
            "public_key": keys.public,
            "from_number": from_number,
        },
        headers=auth,
    )
    assert response.status_code == 200, response.text
    return TelnyxSchool(body["id"], auth, keys, from_number)


@dataclass(frozen=True)
class LiveServer:
    url: str  # http://127.0.0.1:port, also its PUBLIC_BASE_URL
    database_url: str

    async def sql(self, statement: str, *args: Any) -> None:
        connection = await asyncpg.connect(plain_url(self.database_url))
        try:
            await connection.execute(statement, *args)
        finally:
            await connection.close()

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(plain_url(self.database_url))
        try:
            rows: list[asyncpg.Record] = await connection.fetch(query, *args)
            return rows
        finally:
            await connection.close()

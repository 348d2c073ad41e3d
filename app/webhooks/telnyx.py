"""Telnyx's webhook: delivery receipts and inbound SMS in one JSON endpoint
(README, Webhooks; docs/providers.md §2).

Which account's key? A Telnyx webhook names no account the way Twilio's `AccountSid` does,
and its body may not be believed before the signature is checked. So the signature is
checked against the public keys of every Telnyx account we hold, each distinct key once,
until one verifies; nothing in the body chooses the key. (Matching `payload.to`/`from`
against the accounts' numbers would mean reading the body first, and fails for accounts
that send through a messaging profile.) The public key belongs to the Telnyx account
(organisation), not to a number or a messaging profile, so schools on one Telnyx account
share it and there are as many keys as Telnyx customers of this service: few, and one
Ed25519 verification is some 50 µs. Headers and the 300 s window are checked first, so a
malformed or replayed request costs no verification; the accounts are kept a few seconds
(`AccountCache`) and their parsed keys for good.

After that: `message.sent` / `message.finalized` are stored as receipts (and applied
moments later), `message.received` is read for keywords (sent to the schools, among those
holding the key, whose number or messaging profile received it), other event types are
acknowledged and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.delivery.inbox import keep
from app.kit.db import unit_of_work
from app.kit.deps import InboxDep, SessionDep, SessionmakerDep
from app.opt_outs import service as opt_outs
from app.providers import callbacks
from app.providers.base import InboundMessage, InvalidSignature, Receipt
from app.providers.telnyx import events as telnyx_events
from app.providers.telnyx import signature
from app.schools import service as schools
from app.webhooks.common import (
    REFUSALS,
    Accounts,
    Inbound,
    WebhookAccount,
    account_cache,
    named_attempt,
    naming_the_attempt,
    receiving_schools,
    refusals,
    signature_headers,
    signing_accounts,
)

PROVIDER = "telnyx"

router = APIRouter(tags=["webhooks"])


@dataclass(frozen=True, slots=True)
class SignedEvent:
    """A webhook body one of our Telnyx accounts' keys verified, decoded."""

    document: dict[str, Any]
    # The schools' accounts holding the public key that verified it.
    accounts: Accounts


async def _accounts(sessionmaker: async_sessionmaker[AsyncSession]) -> Accounts:
    async with unit_of_work(sessionmaker) as session:
        found = await schools.accounts_with_public_key(session, PROVIDER)
    return [
        WebhookAccount(account.school_id, key, account.from_number, account.messaging_profile_id)
        for account in found
        if (key := account.public_key) is not None
    ]


async def signed_event(
    request: Request,
    sessionmaker: SessionmakerDep,
) -> SignedEvent:
    """The request's JSON body, once the key of a Telnyx account of ours verifies it."""
    with refusals(PROVIDER):
        raw_body = await request.body()
        signed = signature.signed_message(
            raw_body,
            request.headers.get(signature.SIGNATURE_HEADER),
            request.headers.get(signature.TIMESTAMP_HEADER),
        )

        def signers(accounts: Accounts) -> Accounts:
            key = signed.signer(dict.fromkeys(a.secret for a in accounts))
            return [a for a in accounts if a.secret == key]

        accounts = await signing_accounts(
            account_cache(request), (PROVIDER, "*"), lambda: _accounts(sessionmaker), signers
        )
        if not accounts:
            raise InvalidSignature("signed by none of our Telnyx accounts' public keys")
        return SignedEvent(telnyx_events.decode(raw_body), accounts)


def _messaging_profile_id(document: dict[str, Any]) -> str | None:
    data = document.get("data")
    payload = data.get("payload") if isinstance(data, dict) else None
    value = payload.get("messaging_profile_id") if isinstance(payload, dict) else None
    return value if isinstance(value, str) and value else None


async def telnyx_event(
    event: Annotated[SignedEvent, Depends(signed_event)], request: Request
) -> Receipt | Inbound | None:
    """What the event is to us: a receipt (naming the attempt its `webhook_url` named, if
    any), an inbound message, or None (not ours to read)."""
    with refusals(PROVIDER):
        parsed = telnyx_events.parse_event(event.document)
    if isinstance(parsed, InboundMessage):
        profile = _messaging_profile_id(event.document)
        return Inbound(parsed, receiving_schools(event.accounts, parsed.to_number, profile))
    if isinstance(parsed, Receipt):
        return replace(parsed, named_attempt_id=named_attempt(request))
    return parsed


TELNYX_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": (
                        "A Telnyx messaging webhook: `data.event_type` (message.sent, "
                        "message.finalized, message.received), `data.id` (idempotency key), "
                        "`data.payload` (the message: `id`, `to[].status`, `errors[].code`, "
                        "`from`, `text`...)."
                    ),
                    "required": ["data"],
                    "properties": {
                        "data": {"type": "object"},
                        "meta": {"description": "Telnyx's delivery facts (`attempt`); not read"},
                    },
                }
            }
        },
    }
}


@router.post(
    callbacks.TELNYX,
    response_class=Response,
    operation_id="telnyxWebhook",
    summary="Telnyx webhook (delivery receipts and inbound SMS)",
    responses={
        200: {
            "description": (
                "Receipt stored (applied moments later), keyword acted on, or event ignored"
            )
        },
        **REFUSALS,
    },
    openapi_extra=naming_the_attempt(
        {
            **TELNYX_BODY,
            **signature_headers(
                {
                    signature.SIGNATURE_HEADER: "Base64 Ed25519 signature of `timestamp|body`",
                    signature.TIMESTAMP_HEADER: "Unix seconds; refused more than 300 s from now",
                }
            ),
        }
    ),
)
async def telnyx_webhook(
    event: Annotated[Receipt | Inbound | None, Depends(telnyx_event)],
    inbox: InboxDep,
    session: SessionDep,
) -> Response:
    """Telnyx webhook: delivery receipts are stored once (then applied by the receipt
    applier), inbound keywords opt the number out or back in, other events are ignored."""
    if isinstance(event, Receipt):
        await keep(inbox, event)
    elif isinstance(event, Inbound):
        await opt_outs.on_inbound(session, event.school_ids, event.message)
    return Response(status_code=200)

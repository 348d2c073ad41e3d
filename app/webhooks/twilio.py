"""Twilio's webhooks: status callbacks and inbound SMS (README, Webhooks;
docs/providers.md §1.3, §1.4).

Every request is checked before anything in it is believed: the raw form body is parsed
here (every name=value pair, blank values and repeated names kept, exactly what Twilio
signed), the schools' accounts named by its `AccountSid` are looked up (kept a few seconds:
`AccountCache`), and `X-Twilio-Signature` must verify, in constant time, with one of their
auth tokens over PUBLIC_BASE_URL + path (+ query). Otherwise 403, and an unknown account
gets the same answer as a wrong signature. Then a status callback is stored, once, and
answered (`app.delivery.inbox.keep`: one INSERT; the receipt applier applies it moments
later), and an inbound message is read for opt-out/opt-in keywords.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.delivery.inbox import keep
from app.kit.crypto import SecretBox
from app.kit.db import unit_of_work
from app.kit.deps import InboxDep, SecretBoxDep, SessionDep, SessionmakerDep, SettingsDep
from app.kit.schemas import text_only
from app.opt_outs import service as opt_outs
from app.providers import callbacks
from app.providers.base import InvalidSignature, MalformedWebhook, Receipt
from app.providers.twilio import events as twilio_events
from app.providers.twilio import signature
from app.schools import service as schools
from app.webhooks.common import (
    REFUSALS,
    Accounts,
    Inbound,
    WebhookAccount,
    account_cache,
    named_attempt,
    naming_the_attempt,
    public_url,
    receiving_schools,
    refusals,
    signature_headers,
    signing_accounts,
)
from app.webhooks.forms import RECEIPT_FIELDS, requiring

PROVIDER = "twilio"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

router = APIRouter(tags=["webhooks"])


@dataclass(frozen=True, slots=True)
class SignedForm:
    """A form Twilio signed for one of our accounts."""

    params: list[tuple[str, str]]
    # The schools' accounts (named by AccountSid) whose auth token verifies the signature.
    accounts: Accounts


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """Every (name, value) of a form-encoded body, blank values and repeated names kept.

    A body that is not UTF-8 cannot be what Twilio signed: InvalidSignature (403). A field
    holding a NUL byte (raw or %00) is not text (README, Webhooks): MalformedWebhook (400),
    before any field is looked up in the database. Both the route and the status callback's
    fast path read forms here; the NUL check costs two substring scans of the body, and the
    fields are searched only when one of them hits."""
    try:
        text = body.decode("utf-8")
        params = parse_qsl(text, keep_blank_values=True, errors="strict")
    except ValueError as exc:  # UnicodeDecodeError, raw or percent-encoded
        raise InvalidSignature("form body is not UTF-8") from exc
    if ("\x00" in text or "%00" in text) and any(
        "\x00" in name or "\x00" in value for name, value in params
    ):
        raise MalformedWebhook("a form field holds a NUL byte, which is not text")
    return params


async def _accounts(
    sessionmaker: async_sessionmaker[AsyncSession], box: SecretBox, account_sid: str
) -> Accounts:
    async with unit_of_work(sessionmaker) as session:
        found = await schools.accounts_by_sid(session, PROVIDER, account_sid)
    return [
        WebhookAccount(account.school_id, token, account.from_number, account.messaging_service_sid)
        for account in found
        if (token := schools.account_secret(account, box, "auth_token")) is not None
    ]


async def signed_form(
    request: Request,
    sessionmaker: SessionmakerDep,
    settings: SettingsDep,
    box: SecretBoxDep,
) -> SignedForm:
    """The request's form, once a Twilio account of ours is shown to have signed it."""
    with refusals(PROVIDER):
        given = request.headers.get(signature.HEADER)
        if not given:
            raise InvalidSignature(f"missing {signature.HEADER}")
        params = parse_form(await request.body())
        account_sid = twilio_events.account_sid(params)
        if account_sid is None:
            raise InvalidSignature("no AccountSid: no auth token to verify with")
        url = public_url(request, settings.public_base_url)

        def signers(accounts: Accounts) -> Accounts:
            return [
                a for a in accounts if signature.validate_signature(url, params, given, a.secret)
            ]

        accounts = await signing_accounts(
            account_cache(request),
            (PROVIDER, account_sid),
            lambda: _accounts(sessionmaker, box, account_sid),
            signers,
        )
        if not accounts:
            raise InvalidSignature(f"not signed by a known account {account_sid!r} for {url}")
        return SignedForm(params, accounts)


Signed = Annotated[SignedForm, Depends(signed_form)]


async def status_receipt(form: Signed, request: Request) -> Receipt:
    with refusals(PROVIDER):
        receipt = twilio_events.parse_status_callback(form.params)
    return replace(receipt, named_attempt_id=named_attempt(request))


async def inbound_message(form: Signed) -> Inbound:
    with refusals(PROVIDER):
        message = twilio_events.parse_inbound(form.params)
    service_sid = twilio_events.form_value(form.params, "MessagingServiceSid")
    return Inbound(message, receiving_schools(form.accounts, message.to_number, service_sid))


def _form_body(fields: dict[str, str]) -> dict[str, Any]:
    properties = {name: {"type": "string", "description": text} for name, text in fields.items()}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": properties,
                        "additionalProperties": {"type": "string"},
                    }
                }
            },
        }
    }


SIGNED = signature_headers(
    {
        signature.HEADER: "Base64 HMAC-SHA1 of PUBLIC_BASE_URL + path (+ query) and the sorted "
        "form, by the auth token of an account named by `AccountSid`"
    }
)
STATUS_FORM = _form_body(
    {
        "AccountSid": "The Twilio account; its auth token verifies the signature",
        "MessageSid": "The message (SmsSid is read when it is absent)",
        "MessageStatus": "queued, sent, delivered, undelivered, failed...",
        "ErrorCode": "Set on undelivered and failed",
    }
)
INBOUND_FORM = _form_body(
    {
        "AccountSid": "The Twilio account; its auth token verifies the signature",
        "MessageSid": "The inbound message",
        "From": "The contact's number",
        "To": "The school's number",
        "Body": "The text; a whole-message opt-out or opt-in keyword is acted on",
        "MessagingServiceSid": "Set when the number belongs to a messaging service",
        "OptOutType": "STOP, START or HELP when Twilio's Advanced Opt-Out classified the "
        "message (a custom keyword, any language): honoured whatever the words",
    }
)


@router.post(
    callbacks.TWILIO_STATUS,
    operation_id="twilioStatusCallback",
    summary="Twilio status callback (delivery receipt)",
    response_class=Response,
    responses={200: {"description": "Stored (once per event); applied moments later"}, **REFUSALS},
    openapi_extra=naming_the_attempt(
        text_only(
            requiring(
                {**STATUS_FORM, **SIGNED},
                "AccountSid",
                "MessageSid",
                "MessageStatus",
                at_most=RECEIPT_FIELDS,
            )
        )
    ),
)
async def twilio_status_callback(
    receipt: Annotated[Receipt, Depends(status_receipt)], inbox: InboxDep
) -> Response:
    """Twilio status callback (set as `StatusCallback` on every message this service sends):
    the receipt is stored once per event and answered with an empty 200; the receipt
    applier applies it through the status rules moments later, or as soon as its message
    id is recorded."""
    await keep(inbox, receipt)
    return Response(status_code=200)


@router.post(
    callbacks.TWILIO_INBOUND,
    response_class=Response,
    operation_id="twilioInbound",
    summary="Twilio inbound SMS (opt-out and opt-in keywords)",
    responses={
        200: {
            "description": "Empty TwiML: no reply is sent",
            "content": {"text/xml": {"example": EMPTY_TWIML}},
        },
        **REFUSALS,
    },
    openapi_extra=text_only(
        requiring({**INBOUND_FORM, **SIGNED}, "AccountSid", "MessageSid", "From", "To")
    ),
)
async def twilio_inbound(
    message: Annotated[Inbound, Depends(inbound_message)], session: SessionDep
) -> Response:
    """Twilio inbound SMS: opt-out keywords (STOP...) opt the number out of the school that
    received it, opt-in keywords (START...) back in; answered with empty TwiML."""
    await opt_outs.on_inbound(session, message.school_ids, message.message)
    return Response(EMPTY_TWIML, media_type="text/xml")

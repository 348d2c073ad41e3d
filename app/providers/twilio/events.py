"""Twilio webhooks (form-encoded) → neutral Receipt / InboundMessage (docs/providers.md §1.3).

Pure functions over the form parameters (pairs, or a multi-dict such as Starlette's
FormData), used after the signature was checked. Twilio sends no event id and no timestamp
on status callbacks, and may repeat or reorder them, so a receipt's event id is a digest
of what makes it distinct: the message, its status and its error code.
"""

from __future__ import annotations

import hashlib

from app.providers import codes
from app.providers.base import InboundMessage, MalformedWebhook, Receipt, readable_receipt
from app.providers.twilio.form import Form, pairs

# Statuses that end a message without delivering it: their receipts carry a classification.
FAILURE_STATUSES = frozenset({"failed", "undelivered", "canceled"})


def form_value(params: Form, name: str) -> str | None:
    """The first value of `name`, stripped; None when absent or empty."""
    for key, value in pairs(params):
        if key == name:
            value = value.strip()
            return value or None
    return None


def account_sid(params: Form) -> str | None:
    """The AccountSid a webhook names: whose auth token verifies its signature."""
    return form_value(params, "AccountSid")


def event_id(message_sid: str, status: str, error_code: str | None) -> str:
    """The idempotency key of a status callback: the same three facts, the same key."""
    text = f"{message_sid}|{status}|{error_code or ''}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _error_code(params: Form) -> str | None:
    code = form_value(params, "ErrorCode")
    return None if code is None or code == "0" else code


def parse_status_callback(params: Form, *, provider: str = "twilio") -> Receipt:
    """A status callback as a Receipt; MalformedWebhook when it names no message or status.

    `provider` is "simulator" when the built-in simulator feeds its Twilio-shaped receipts
    through this same function.
    """
    form = pairs(params)
    sid = form_value(form, "MessageSid") or form_value(form, "SmsSid")
    status = form_value(form, "MessageStatus") or form_value(form, "SmsStatus")
    if sid is None:
        raise MalformedWebhook("status callback without MessageSid")
    if status is None:
        raise MalformedWebhook("status callback without MessageStatus")
    return readable_receipt(status_receipt(sid, status, _error_code(form), provider=provider))


def status_receipt(
    sid: str, status: str, error_code: str | None, *, provider: str = "twilio"
) -> Receipt:
    """The receipt of a message's status (`status`, `error_code`): a status callback's, or
    what fetching the message found (`TwilioProvider.fetch_status`). The same facts make the
    same receipt, its event id included, so a callback and a fetch of them are one event."""
    status = status.lower()
    return Receipt(
        provider=provider,
        provider_message_id=sid,
        provider_status=status,
        error_code=error_code,
        event_id=event_id(sid, status, error_code),
        classification=(
            codes.classify(provider, error_code, "receipt") if status in FAILURE_STATUSES else None
        ),
    )


def parse_inbound(params: Form, *, provider: str = "twilio") -> InboundMessage:
    """An inbound SMS (From, To, Body, and OptOutType when Twilio's Advanced Opt-Out
    classified it); MalformedWebhook when From, To or the sid is missing."""
    form = pairs(params)
    sid = form_value(form, "MessageSid") or form_value(form, "SmsSid")
    sender = form_value(form, "From")
    to = form_value(form, "To")
    if sid is None or sender is None or to is None:
        raise MalformedWebhook("inbound message without MessageSid, From or To")
    body = next((value for key, value in form if key == "Body"), "")
    opt_out_type = form_value(form, "OptOutType")
    return InboundMessage(provider, sid, sender, to, body, opt_out_type)

"""Telnyx webhooks (JSON) → neutral Receipt / InboundMessage (docs/providers.md §2.1, §2.2).

`message.sent` and `message.finalized` become a Receipt: the event id `data.id` is Telnyx's
idempotency key, the status is `payload.to[0].status` (we send to one number), the error
code is `payload.errors[0].code`. What each status does (docs/providers.md §2.2; the status
rules' `PROVIDER_PHASES`): `delivered` is a confirmed delivery; `delivery_unconfirmed` is
not a failure but a delivery the carrier did not confirm (README, Webhooks: no
classification); `expired` is a soft `sending_error` whatever code comes with it
(rescheduled as the retry policy says); `sending_failed` and `delivery_failed` are
classified by their error code. `message.received` becomes an InboundMessage; other
event types are not ours to read (None: acknowledge and ignore).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from app.providers import codes
from app.providers.base import InboundMessage, MalformedWebhook, Receipt, readable_receipt
from app.sending.outcomes import Classification

PROVIDER = "telnyx"
RECEIPT_EVENTS = frozenset({"message.sent", "message.finalized"})
INBOUND_EVENT = "message.received"
FAILURE_STATUSES = frozenset({"sending_failed", "delivery_failed", "expired"})
# The message expired before it could be delivered (its validity period ran out): a soft
# bounce, sent again as the school's retry policy says (docs/providers.md §1.5, §2.2).
EXPIRED = Classification("sending_error", soft=True)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedWebhook(f"{where} is not an object")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MalformedWebhook(f"{where} is missing")
    return value.strip()


def _occurred_at(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _error_code(payload: dict[str, Any]) -> str | None:
    errors = payload.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        code = errors[0].get("code")
        if isinstance(code, int | str) and str(code).strip():
            return str(code).strip()
    return None


def _phone(value: Any, where: str) -> str:
    if isinstance(value, dict):
        value = value.get("phone_number")
    return _text(value, where)


def _is_text(value: Any) -> bool:
    """Whether every string in a decoded JSON value (keys too) is text PostgreSQL can store:
    no NUL, no lone surrogate."""
    if isinstance(value, str):
        if "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, from a \ud800 escape
            return False
        return True
    if isinstance(value, dict):
        return all(_is_text(key) and _is_text(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_is_text(item) for item in value)
    return True


def decode(raw_body: bytes | str) -> dict[str, Any]:
    r"""The webhook's JSON object; MalformedWebhook when it is not one, or when a field is not
    text (README, Webhooks): a body that is not UTF-8, a NUL (\u0000) or a lone surrogate.

    Only a `\u` escape can put a NUL or a surrogate into a string that strict UTF-8 decoding
    and strict JSON let through, so the fields are searched only when the body has one."""
    try:
        text = raw_body.decode("utf-8") if isinstance(raw_body, bytes) else raw_body
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedWebhook(f"body is not JSON: {exc}") from exc
    if "\\u" in text and not _is_text(document):
        raise MalformedWebhook("a field is not text (a NUL or a lone surrogate)")
    return _object(document, "body")


def parse_event(document: dict[str, Any]) -> Receipt | InboundMessage | None:
    """A decoded Telnyx webhook as a Receipt, an InboundMessage, or None (not ours to read)."""
    data = _object(document.get("data"), "data")
    event_type = data.get("event_type")
    if event_type not in RECEIPT_EVENTS and event_type != INBOUND_EVENT:
        return None
    payload = _object(data.get("payload"), "data.payload")
    message_id = _text(payload.get("id"), "data.payload.id")
    if event_type == INBOUND_EVENT:
        recipients = payload.get("to")
        first = recipients[0] if isinstance(recipients, list) and recipients else None
        text = payload.get("text")
        return InboundMessage(
            provider=PROVIDER,
            provider_message_id=message_id,
            from_number=_phone(payload.get("from"), "data.payload.from"),
            to_number=_phone(first, "data.payload.to[0]"),
            body=text if isinstance(text, str) else "",
        )
    recipients = payload.get("to")
    if not (isinstance(recipients, list) and recipients):
        raise MalformedWebhook("data.payload.to is empty")
    first = _object(recipients[0], "data.payload.to[0]")
    status = _text(first.get("status"), "data.payload.to[0].status").lower()
    return readable_receipt(
        status_receipt(
            message_id,
            status,
            _error_code(payload),
            event_id=_text(data.get("id"), "data.id"),
            occurred_at=_occurred_at(data.get("occurred_at")),
        )
    )


def status_receipt(
    message_id: str,
    status: str,
    error_code: str | None,
    *,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> Receipt:
    """The receipt of a message's status: a webhook's (under Telnyx's event id), or what
    retrieving the message found (`TelnyxProvider.fetch_status`: no event id of Telnyx's,
    so a digest of the message, its status and its error code, the same for the same facts).
    """
    status = status.lower()
    classification: Classification | None = None
    if status == "expired":
        classification = EXPIRED
    elif status in FAILURE_STATUSES:
        classification = codes.classify(PROVIDER, error_code, "receipt")
    if event_id is None:
        facts = f"fetched|{message_id}|{status}|{error_code or ''}"
        event_id = hashlib.sha256(facts.encode("utf-8")).hexdigest()
    return Receipt(
        provider=PROVIDER,
        provider_message_id=message_id,
        provider_status=status,
        error_code=error_code,
        event_id=event_id,
        occurred_at=occurred_at,
        classification=classification,
    )


def message_receipt(document: dict[str, Any]) -> Receipt | None:
    """The receipt of a retrieved message (`GET /v2/messages/{id}`: `{"data": {"id", "to":
    [{"status"}], "errors": [{"code"}]}}`), or None when it names no id or status."""
    data = document.get("data")
    if not isinstance(data, dict):
        return None
    message_id, recipients = data.get("id"), data.get("to")
    if not (isinstance(message_id, str) and message_id.strip()):
        return None
    if not (isinstance(recipients, list) and recipients and isinstance(recipients[0], dict)):
        return None
    status = recipients[0].get("status")
    if not (isinstance(status, str) and status.strip()):
        return None
    return status_receipt(message_id.strip(), status.strip(), _error_code(data))


def parse_webhook(raw_body: bytes | str) -> Receipt | InboundMessage | None:
    """`decode` then `parse_event`: the raw body the signature was checked on."""
    return parse_event(decode(raw_body))

"""The provider protocol and the neutral results every adapter translates into.

Adapters speak their provider's protocol and translate its answers; they never decide
what a recipient's status becomes (that is app.sending.status).
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import String

from app.models.receipt import StoredReceipt
from app.sending.outcomes import Classification, Outcome


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    to: str  # E.164
    body: str
    status_callback: str | None = None
    # How long the provider may hold the message before giving up on it, in whole seconds
    # (1-36,000): those left in the school's sending window when it is handed over (README,
    # Delivery; `app.sending.schedule.validity_seconds`). None: no window, the provider's own
    # limit applies. Twilio sends it as `ValidityPeriod`; Telnyx has no such parameter
    # (docs/providers.md §1.1, §2.5).
    validity_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    provider_message_id: str | None = None
    # The provider's own status word for the message (queued, accepted, failed...).
    provider_status: str | None = None
    error_code: str | None = None
    classification: Classification | None = None
    # True when we cannot know whether the provider took the message (timeout after the
    # request was sent, 5xx): before re-sending, ask the provider (find_sent).
    outcome_unknown: bool = False
    retry_after_seconds: float | None = None
    # The provider's (or the network's) words, for logs and the attempt history only.
    error_message: str | None = None


class LookupAnswer(enum.StrEnum):
    """What a provider says when asked whether a message went out (README, Delivery)."""

    sent = "sent"  # it went out (or is in the provider's queue): its id is known
    not_sent = "not_sent"  # the provider was asked and has no such message
    cant_tell = "cant_tell"  # the question could not be answered (429, 5xx, timeout, page cap,
    # or no lookup at all): never a reason to send


@dataclass(frozen=True, slots=True)
class Lookup:
    """The answer to "did it go out?", with the message id when it did."""

    answer: LookupAnswer
    provider_message_id: str | None = None
    # Why the provider could not tell (for logs only).
    why: str | None = None

    @classmethod
    def sent(cls, provider_message_id: str) -> Lookup:
        return cls(LookupAnswer.sent, provider_message_id)

    @classmethod
    def not_sent(cls) -> Lookup:
        return cls(LookupAnswer.not_sent)

    @classmethod
    def cant_tell(cls, why: str) -> Lookup:
        return cls(LookupAnswer.cant_tell, why=why)


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery receipt, neutral: which message, what the provider says, which error."""

    provider: str
    provider_message_id: str
    provider_status: str
    error_code: str | None
    # Idempotency key: the provider's event id, or a digest of (message, status, code).
    event_id: str
    occurred_at: datetime | None = None
    # Set on a failure receipt (failed, undelivered, delivery_failed...): what the error
    # code means through the code table (a failure without a code is `unknown`, hard).
    classification: Classification | None = None
    # The attempt the callback's URL named (`app.providers.callbacks`), if it named one.
    named_attempt_id: int | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    """What the provider says of one message asked for by its id (README, the
    reconciliation): its status as the receipt a status callback would have brought (the same
    event id where the provider's callbacks have none of their own, so the two are one event),
    or, when it could not tell (429, 5xx, timeout, an unknown id, a provider or a message
    with no lookup), why."""

    receipt: Receipt | None
    why: str | None = None

    @classmethod
    def cant_tell(cls, why: str) -> Fetched:
        return cls(None, why)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message a contact sent us (opt-out and opt-in keywords arrive this way)."""

    provider: str
    provider_message_id: str
    from_number: str
    to_number: str
    body: str
    # The provider's own opt-out classification, when it made one: Twilio's Advanced
    # Opt-Out `OptOutType` ("STOP", "START", "HELP"); None otherwise (Telnyx, plain Twilio).
    opt_out_type: str | None = None


class WebhookError(Exception):
    """A webhook we refuse; `str(exc)` says why (for logs, not for the caller)."""


class InvalidSignature(WebhookError):
    """Missing, malformed, stale or wrong signature: answer 403 and change nothing."""


class MalformedWebhook(WebhookError):
    """Signed but not a payload we can read: answer 400 and change nothing."""


class Provider(Protocol):
    name: str
    # The longest a message can wait at the provider before it goes out or is dropped
    # (Twilio: the largest ValidityPeriod, 36,000 s). A hand-over whose lookup keeps
    # answering "can't tell", and that no receipt named, for longer than this is taken as
    # not sent (README, Delivery).
    holding_seconds: float

    async def send(self, message: OutboundMessage) -> SendResult:
        """Hand one message to the provider; never raises for provider or network errors."""
        ...

    async def find_sent(
        self, to: str, since: datetime, body: str, exclude: Collection[str] = ()
    ) -> Lookup:
        """Whether a message to `to` with this body, created since `since`, went out from
        this sender, other than the ids in `exclude` (messages other attempts hold).

        Used after an outcome_unknown send or a hand-over cut short, before sending again.
        Never raises: a lookup that failed, was cut short, or cannot be made is `cant_tell`,
        never `not_sent`.
        """
        ...

    async def fetch_status(self, provider_message_id: str) -> Fetched:
        """The message's status now, asked by its id (README: the reconciliation of a
        message whose final receipt never came). Never raises: anything but a readable
        answer is `Fetched.cant_tell`, and changes nothing."""
        ...


def readable_receipt(receipt: Receipt) -> Receipt:
    """A webhook's receipt, if the receipts inbox can keep each of its fields whole (the
    columns of app/models/receipt.py); else MalformedWebhook (400): no provider sends a
    status, an error code or an id that long, and a signed one must not be a 500."""
    for name in ("provider_message_id", "provider_status", "error_code", "event_id"):
        value: str | None = getattr(receipt, name)
        column = StoredReceipt.__table__.c[name].type
        limit = column.length if isinstance(column, String) else None
        if value is not None and limit is not None and len(value) > limit:
            raise MalformedWebhook(f"its {name} is longer than {limit} characters")
    return receipt

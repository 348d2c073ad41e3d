"""The paths providers call us on, in one place: the status callback set on every message
we send (`Registry.callback_url`), and the webhooks a school configures at its provider.
`app.webhooks` serves them.

A status callback's URL names the attempt its message belongs to (`AttemptNames`:
`...?attempt=<id>.<tag>`), so a receipt finds its attempt even when the provider's answer to
the create call, and with it the message id, was lost (README, "What each provider can
promise about duplicates"). The tag, a MAC under SECRET_KEY, keeps a school that signs
callbacks with its own provider account from naming another school's attempts: an attempt
id is a counter, a tag is not guessable.
"""

from __future__ import annotations

import hashlib
import hmac

from app.kit.crypto import SecretBox

TWILIO_STATUS = "/v1/webhooks/twilio/status"
TWILIO_INBOUND = "/v1/webhooks/twilio/inbound"
TELNYX = "/v1/webhooks/telnyx"  # receipts and inbound messages alike

# Each provider's status callback, by provider name.
STATUS_CALLBACKS = {"twilio": TWILIO_STATUS, "telnyx": TELNYX}

# The query parameter that names the attempt.
ATTEMPT = "attempt"
_TAG_CHARS = 16  # hex: 64 bits of the MAC


class AttemptNames:
    """Names attempts in callback URLs, and reads the names back."""

    def __init__(self, box: SecretBox) -> None:
        self._key = box.subkey("attempt names")

    def _tag(self, attempt_id: int) -> str:
        mac = hmac.new(self._key, str(attempt_id).encode(), hashlib.sha256)
        return mac.hexdigest()[:_TAG_CHARS]

    def name(self, attempt_id: int) -> str:
        return f"{attempt_id}.{self._tag(attempt_id)}"

    def url(self, base: str, attempt_id: int) -> str:
        """`base` (a status callback URL without a query) naming the attempt."""
        return f"{base}?{ATTEMPT}={self.name(attempt_id)}"

    def read(self, name: str | None) -> int | None:
        """The attempt a name names; None for no name or one we did not make (a wrong
        tag, an old SECRET_KEY): such a receipt still applies by its message id."""
        if not name:
            return None
        attempt, _, tag = name.partition(".")
        if not attempt.isascii() or not attempt.isdigit() or len(attempt) > 18:
            return None
        attempt_id = int(attempt)
        if not hmac.compare_digest(tag.encode(), self._tag(attempt_id).encode()):
            return None
        return attempt_id

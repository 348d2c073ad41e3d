"""What a provider's answer or receipt means, in our words: the outcome of a send and the
classification of an error code. The adapters (`app.providers`) produce them; the status
rules (`app.sending.status`) decide what they do to a recipient."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

# When a provider error code is met: answering our create call, or in a delivery receipt.
# An unknown code means `failed_to_create` at create and `unknown` in a receipt.
CodePhase = Literal["create", "receipt"]


class Outcome(enum.StrEnum):
    accepted = "accepted"  # the provider took the message; receipts will follow
    soft = "soft"  # temporary: try again later (429, 5xx, timeouts, soft codes)
    hard = "hard"  # final: do not resend unchanged


@dataclass(frozen=True, slots=True)
class Classification:
    """What a provider error code means to us: a failed reason, soft or hard, the definition."""

    reason: str
    soft: bool
    definition_index: int = 0

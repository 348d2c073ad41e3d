"""The failed-reason catalog, as data: codes, labels, definitions, resendable."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FailedReason:
    code: str
    label: str
    definitions: tuple[str, ...]
    # None: not a final reason (reattempting), so resending does not apply.
    resendable: bool | None


# The reason of a number that opted out (of the school, or at the provider: Twilio 21610).
OPTED_OUT = "opted_out"

CATALOG: tuple[FailedReason, ...] = (
    FailedReason(
        "blocked",
        "Blocked by Carrier/User",
        (
            "This message was filtered or blocked by the carrier",
            "This number is blocked from receiving this message",
        ),
        True,
    ),
    FailedReason(
        "international_number",
        "International Number",
        ("Phone number contains unsupported country code",),
        False,
    ),
    FailedReason(
        "invalid_number",
        "Invalid Number",
        ("Phone number is invalid", "This number is unknown and may no longer exist"),
        False,
    ),
    FailedReason(
        "opted_out", "Opted out", ("This number has opted out of a previous campaign.",), False
    ),
    FailedReason(
        "sending_error",
        "Sending Error",
        ("There was an issue sending messages, please contact support",),
        True,
    ),
    FailedReason(
        "unknown", "Unknown Error", ("This message delivery failed for an unknown reason",), True
    ),
    FailedReason(
        "partial_failure",
        "Partial Failure",
        ("One or more segments associated with your multi-part inbound message was not received",),
        True,
    ),
    FailedReason(
        "reattempting",
        "Re-attempting Delivery",
        ("The message is queued and will be retried",),
        None,
    ),
    FailedReason(
        "unreachable_number",
        "Unreachable Number",
        (
            "This number is switched off or otherwise unavailable",
            "This number was sent to a landline or unreachable carrier for this phone number type",
        ),
        False,
    ),
    FailedReason("failed_to_create", "Failed to create message", ("All other errors",), True),
)

BY_CODE: dict[str, FailedReason] = {reason.code: reason for reason in CATALOG}
CODES: tuple[str, ...] = tuple(BY_CODE)


def get(code: str) -> FailedReason:
    return BY_CODE[code]


def definition(code: str, index: int = 0) -> str:
    """The definition at `index` (a code table picks the one that fits its error)."""
    definitions = BY_CODE[code].definitions
    return definitions[index] if 0 <= index < len(definitions) else definitions[0]

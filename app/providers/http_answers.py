"""What HTTP-speaking adapters share: turning transport failures and throttling into results.

The rule (README, Delivery): an outage of the provider never fails a recipient. Anything that went
wrong before the request left us is soft; anything after it may have been processed, so it
is soft *and* `outcome_unknown` (creating a message is not idempotent).
"""

from __future__ import annotations

import email.utils
import logging
import math
from datetime import UTC
from typing import Any

import httpx

from app.kit.clock import utcnow
from app.providers import codes
from app.providers.base import SendResult
from app.sending.outcomes import Classification, Outcome

log = logging.getLogger(__name__)

# What a soft failure without a provider code becomes if its retries ever run out.
SOFT_SENDING_ERROR = Classification("sending_error", soft=True)
HARD_SENDING_ERROR = Classification("sending_error", soft=False)

# The request never reached the provider: safe to send again.
_NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
)
# Our side is misconfigured (api_base): no retry will help, tell staff to contact support.
_CONFIG: tuple[type[Exception], ...] = (
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.InvalidURL,
)


def transport_failure(provider: str, exc: Exception) -> SendResult:
    """The result of a create call that raised instead of answering."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, _CONFIG):
        log.error("%s: cannot send, configuration: %s", provider, message)
        return SendResult(Outcome.hard, classification=HARD_SENDING_ERROR, error_message=message)
    if isinstance(exc, _NOT_SENT):
        log.warning("%s: not sent: %s", provider, message)
        return SendResult(Outcome.soft, classification=SOFT_SENDING_ERROR, error_message=message)
    # Read timeouts, dropped connections, broken responses: the provider may have it.
    log.warning("%s: outcome unknown: %s", provider, message)
    return SendResult(
        Outcome.soft,
        classification=SOFT_SENDING_ERROR,
        outcome_unknown=True,
        error_message=message,
    )


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), if any. A value
    that is no number of seconds (`inf`, `nan`) is ignored; how long is too long is the
    school's to say (its max_delay_seconds caps the wait, see delivery.policy.retry_due)."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):  # a year past 9999, say
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - utcnow()).total_seconds())


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object, or {} when it has none."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def soft(classification: Classification) -> Classification:
    """The classification of a failure that is soft whatever its code says."""
    return classification if classification.soft else SOFT_SENDING_ERROR


def refused(
    provider: str,
    response: httpx.Response,
    code: str | None,
    message: str,
    *,
    throttled_code: str | None = None,
) -> SendResult:
    """A create call that did not answer with a message, the same for every provider:
    429 is soft (with Retry-After); another 4xx goes through the code table (401/403 with a
    code the table does not know: bad credentials, hard); 5xx or an unreadable 2xx is soft
    with the outcome unknown, since the provider may have created the message."""
    status = response.status_code
    if status == 429:
        code = code or throttled_code
        return SendResult(
            Outcome.soft,
            error_code=code,
            classification=soft(codes.classify(provider, code, "create")),
            retry_after_seconds=retry_after(response.headers),
            error_message=message,
        )
    if 400 <= status < 500:
        classification = codes.classify(provider, code, "create")
        if status in (401, 403) and (code is None or code not in codes.table(provider).rows):
            classification = HARD_SENDING_ERROR  # credentials: no retry helps, staff must fix
        return SendResult(
            Outcome.soft if classification.soft else Outcome.hard,
            error_code=code,
            classification=classification,
            error_message=message,
        )
    log.warning("%s: HTTP %s on create, outcome unknown: %s", provider, status, message)
    return SendResult(
        Outcome.soft,
        error_code=code,
        classification=soft(codes.classify(provider, code, "create")),
        outcome_unknown=True,
        retry_after_seconds=retry_after(response.headers),
        error_message=message,
    )

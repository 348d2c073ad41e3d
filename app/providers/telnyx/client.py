"""Telnyx Messaging API v2: send one message (docs/providers.md §2.5).

`POST {api_base}/v2/messages` with a JSON body and the account's API key as a bearer token,
over the service's one shared `httpx.AsyncClient`. Answers are translated by the same rules
as Twilio's: errors come as `{"errors": [{"code": "40310", "title", "detail"}]}` and map
through `telnyx/codes.json` (40300, opted out, comes as HTTP 409); 429 is soft; 5xx and
anything after the request left us is soft with an unknown outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from app.providers.base import Fetched, Lookup, OutboundMessage, SendResult
from app.providers.http_answers import json_object, refused, transport_failure
from app.providers.telnyx.events import message_receipt
from app.sending import schedule
from app.sending.outcomes import Outcome

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api.telnyx.com"


class TelnyxProvider:
    """One Telnyx account sending from a number or a messaging profile."""

    name: str = "telnyx"
    # Its create takes no validity period; Telnyx rejects a message queued over 4 hours
    # (docs/providers.md §2.5), but how long one lives is not documented further: Twilio's
    # longest hold, the safer wait, is assumed (docs/providers.md §2.6).
    holding_seconds: float = float(schedule.VALIDITY_MAX_SECONDS)

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_key: str,
        from_number: str | None = None,
        messaging_profile_id: str | None = None,
        api_base: str | None = None,
    ) -> None:
        if not (from_number or messaging_profile_id):
            raise ValueError("a Telnyx sender needs from_number or messaging_profile_id")
        self._http = http
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self.from_number = from_number
        self.messaging_profile_id = messaging_profile_id
        self.api_base = (api_base or DEFAULT_API_BASE).rstrip("/")

    @property
    def messages_url(self) -> str:
        return f"{self.api_base}/v2/messages"

    async def send(self, message: OutboundMessage) -> SendResult:
        """Create one message; never raises for provider or network errors."""
        payload: dict[str, str] = {"to": message.to, "text": message.body}
        if self.from_number:
            payload["from"] = self.from_number
        if self.messaging_profile_id:
            payload["messaging_profile_id"] = self.messaging_profile_id
        if message.status_callback:
            payload["webhook_url"] = message.status_callback
        try:
            response = await self._http.post(self.messages_url, json=payload, headers=self._headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return transport_failure(self.name, exc)
        return self._translate(response)

    def _translate(self, response: httpx.Response) -> SendResult:
        body = json_object(response)
        status = response.status_code
        if 200 <= status < 300:
            data = body.get("data")
            if isinstance(data, dict) and isinstance(data.get("id"), str) and data["id"]:
                return SendResult(
                    Outcome.accepted,
                    provider_message_id=data["id"],
                    provider_status=_first_status(data),
                )
        code, detail = _error(body)
        message = detail or f"HTTP {status}"
        return refused(self.name, response, code, message)

    async def find_sent(
        self, to: str, since: datetime, body: str, exclude: Collection[str] = ()
    ) -> Lookup:
        """Always "can't tell" (docs/providers.md §2.6, README: What each provider can
        promise about duplicates).

        The Messaging API has create, retrieve-by-id and webhooks; no per-number list. The
        detail-records search (`GET /v2/detail_records`, record type messaging) is a usage
        report: nothing documents how soon a message appears in it, so a miss proves nothing.
        A lost create answer therefore waits for a receipt naming its attempt, or for
        `holding_seconds`, before the message is sent again.
        """
        return Lookup.cant_tell("Telnyx has no message lookup")

    async def fetch_status(self, provider_message_id: str) -> Fetched:
        """The message's status now: `GET /v2/messages/{id}` (Retrieve a message,
        https://developers.telnyx.com/api-reference/messages/retrieve-a-message;
        docs/providers.md §2.6): `data.to[0].status` and `data.errors[0].code`, as the
        receipt a webhook of them would be. Telnyx keeps messages there for 10 days: an
        older one answers 404, which like 429, 5xx or a timeout is `cant_tell` (a message
        still `sent` is settled by the overdue rule, README: Receipts that never come)."""
        url = f"{self.messages_url}/{quote(provider_message_id, safe='')}"
        try:
            response = await self._http.get(url, headers=self._headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            log.warning("telnyx: retrieving a message failed: %s: %s", type(exc).__name__, exc)
            return Fetched.cant_tell(f"retrieving the message failed: {type(exc).__name__}")
        if response.status_code != 200:
            log.warning("telnyx: retrieving a message answered HTTP %s", response.status_code)
            return Fetched.cant_tell(f"retrieving the message answered HTTP {response.status_code}")
        receipt = message_receipt(json_object(response))
        if receipt is None or receipt.provider_message_id != provider_message_id:
            return Fetched.cant_tell("the retrieved message has no status")
        return Fetched(receipt)


def _first_status(data: dict[str, Any]) -> str | None:
    recipients = data.get("to")
    if isinstance(recipients, list) and recipients and isinstance(recipients[0], dict):
        status = recipients[0].get("status")
        return status if isinstance(status, str) else None
    return None


def _error(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """The first of `errors[]`: its code (a string at Telnyx) and its title/detail."""
    errors = body.get("errors")
    if not (isinstance(errors, list) and errors and isinstance(errors[0], dict)):
        return None, None
    first = errors[0]
    code = first.get("code")
    texts = [t for t in (first.get("title"), first.get("detail")) if isinstance(t, str) and t]
    return (
        str(code).strip() if isinstance(code, int | str) and str(code).strip() else None,
        ": ".join(texts) or None,
    )

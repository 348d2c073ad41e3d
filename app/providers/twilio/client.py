"""Twilio Programmable Messaging: send one message, and look one up after an unknown outcome.

Speaks the 2010-04-01 Messages API (docs/providers.md §1.1) over the service's one shared
`httpx.AsyncClient` (its timeouts apply), and translates every answer into a `SendResult`:

| answer                                   | outcome | outcome_unknown | classification       |
|------------------------------------------|---------|-----------------|----------------------|
| 2xx with a message sid                   | accepted| no              | —                    |
| 429 (20429, never processed)             | soft    | no              | table row, soft      |
| other 4xx with Twilio's error JSON       | table   | no              | codes.json (create)  |
| 401/403 with no known code              | hard    | no              | sending_error        |
| 5xx, odd 2xx/3xx                         | soft    | yes             | table row if soft    |
| connect error / connect or pool timeout  | soft    | no              | sending_error (soft) |
| read timeout, dropped connection...      | soft    | yes             | sending_error (soft) |
"""

from __future__ import annotations

import email.utils
import logging
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from app.providers.base import Fetched, Lookup, OutboundMessage, SendResult
from app.providers.http_answers import json_object, refused, transport_failure
from app.providers.twilio.events import status_receipt
from app.sending import schedule
from app.sending.outcomes import Outcome

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api.twilio.com"
API_VERSION = "2010-04-01"
THROTTLED = "20429"
# The longest a message waits in Twilio's queue: its largest ValidityPeriod (also the
# default), https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource
HOLDING_SECONDS = float(schedule.VALIDITY_MAX_SECONDS)


class TwilioProvider:
    """One Twilio account (or subaccount) sending from a number or a Messaging Service."""

    name: str = "twilio"
    # The largest ValidityPeriod Twilio accepts: no message waits in its queue longer.
    holding_seconds: float = HOLDING_SECONDS

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        api_base: str | None = None,
        clock_skew: timedelta = timedelta(seconds=5),
        max_pages: int = 20,
        page_size: int = 1000,
    ) -> None:
        if not (from_number or messaging_service_sid):
            raise ValueError("a Twilio sender needs from_number or messaging_service_sid")
        self._http = http
        self.account_sid = account_sid
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.api_base = (api_base or DEFAULT_API_BASE).rstrip("/")
        # Our clock and Twilio's (and its whole-second date_created) may disagree a little.
        self._clock_skew = clock_skew
        # Pages read by one lookup, of `page_size` messages each (Twilio's largest, 1000):
        # a parent with more messages than that from this sender is "can't tell".
        self._max_pages = max_pages
        self._page_size = page_size

    @property
    def messages_url(self) -> str:
        return f"{self.api_base}/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"

    async def send(self, message: OutboundMessage) -> SendResult:
        """Create one message; never raises for provider or network errors."""
        form = {"To": message.to, "Body": message.body}
        if self.messaging_service_sid:
            form["MessagingServiceSid"] = self.messaging_service_sid
        if self.from_number:
            form["From"] = self.from_number
        if message.status_callback:
            form["StatusCallback"] = message.status_callback
        if message.validity_seconds is not None:
            # How long Twilio may keep the message in its queue before giving up on it
            # (error 30036): the seconds left in the school's sending window, so a queued
            # message never goes out at night. An integer, 1 to 36,000 (the default):
            # twilio-oai spec/json/twilio_api_v2010.json, Messages create `ValidityPeriod`
            # (https://github.com/twilio/twilio-oai); docs/providers.md §1.1.
            form["ValidityPeriod"] = str(message.validity_seconds)
        try:
            response = await self._http.post(
                self.messages_url,
                data=form,
                auth=self._auth,
                headers={"Accept": "application/json"},
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return transport_failure(self.name, exc)
        return self._translate(response)

    def _translate(self, response: httpx.Response) -> SendResult:
        body = json_object(response)
        status = response.status_code
        if 200 <= status < 300:
            sid = body.get("sid")
            if isinstance(sid, str) and sid:
                provider_status = body.get("status")
                return SendResult(
                    Outcome.accepted,
                    provider_message_id=sid,
                    provider_status=provider_status if isinstance(provider_status, str) else None,
                )
        code, detail = _error(body)
        message = detail or f"HTTP {status}"
        return refused(self.name, response, code, message, throttled_code=THROTTLED)

    async def find_sent(
        self, to: str, since: datetime, body: str, exclude: Collection[str] = ()
    ) -> Lookup:
        """Whether an outbound message to `to` from this sender with this body, created at or
        after `since`, exists at Twilio, other than the sids in `exclude` (docs/providers.md
        §1.7).

        Lists `Messages.json?To=...&From=...` (a Messaging Service has no list filter: its
        messages are matched on `messaging_service_sid`) and reads every page until the list
        ends. Twilio sorts the list by `date_sent`, newest first, and a message still in its
        queue has no `date_sent`; where such messages sort is not documented, so no page is
        skipped on a date: `not_sent` only once the whole list was read. A failed page (429,
        5xx, timeout, an unreadable answer) or more than `max_pages` pages is `cant_tell`.
        """
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        earliest = since.astimezone(UTC).replace(microsecond=0) - self._clock_skew
        url: str | None = self.messages_url
        query = {"To": to, "PageSize": str(self._page_size)}
        if self.from_number:
            query["From"] = self.from_number
        params: dict[str, str] | None = query
        try:
            for _ in range(self._max_pages):
                if url is None:
                    return Lookup.not_sent()
                response = await self._http.get(
                    url,
                    params=params,
                    auth=self._auth,
                    headers={"Accept": "application/json"},
                )
                if response.status_code != 200:
                    log.warning("twilio: listing messages answered HTTP %s", response.status_code)
                    return Lookup.cant_tell(
                        f"listing messages answered HTTP {response.status_code}"
                    )
                page = json_object(response)
                messages = page.get("messages")
                if not isinstance(messages, list):
                    return Lookup.cant_tell("listing messages answered no list")
                sid = self._match(messages, to, body, earliest, exclude)
                if sid is not None:
                    return Lookup.sent(sid)
                next_uri = page.get("next_page_uri")
                url = f"{self.api_base}{next_uri}" if isinstance(next_uri, str) else None
                params = None  # the next page's URI carries its own query
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            log.warning("twilio: listing messages failed: %s: %s", type(exc).__name__, exc)
            return Lookup.cant_tell(f"listing messages failed: {type(exc).__name__}")
        if url is None:
            return Lookup.not_sent()
        log.warning("twilio: find_sent stopped after %d pages", self._max_pages)
        return Lookup.cant_tell(f"more than {self._max_pages} pages of messages")

    async def fetch_status(self, provider_message_id: str) -> Fetched:
        """The message's status now: `GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json`
        (twilio-oai `spec/json/twilio_api_v2010.json`, operation FetchMessage;
        https://www.twilio.com/docs/messaging/api/message-resource#fetch-a-message-resource),
        its `status` and `error_code` as the receipt a status callback of them would be.

        Anything else is `cant_tell`: 429, 5xx, a timeout, an answer without a status, and
        404 (code 20404) too. Twilio keeps a message it created (unless the account deletes
        it), so a 404 for a sid of ours means the message was deleted, or the school's
        account is not the one that sent it any more (new credentials): it says nothing of
        whether the message arrived, and a message still `sent` is settled by the overdue
        rule anyway (README; docs/providers.md §1.7)."""
        url = (
            f"{self.api_base}/{API_VERSION}/Accounts/{self.account_sid}"
            f"/Messages/{quote(provider_message_id, safe='')}.json"
        )
        try:
            response = await self._http.get(
                url, auth=self._auth, headers={"Accept": "application/json"}
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            log.warning("twilio: fetching a message failed: %s: %s", type(exc).__name__, exc)
            return Fetched.cant_tell(f"fetching the message failed: {type(exc).__name__}")
        if response.status_code != 200:
            log.warning("twilio: fetching a message answered HTTP %s", response.status_code)
            return Fetched.cant_tell(f"fetching the message answered HTTP {response.status_code}")
        body = json_object(response)
        status = body.get("status")
        if not (isinstance(status, str) and status.strip()):
            return Fetched.cant_tell("the fetched message has no status")
        code = body.get("error_code")
        error_code = str(code).strip() if isinstance(code, int | str) else None
        if error_code in ("", "0"):
            error_code = None
        return Fetched(status_receipt(provider_message_id, status.strip(), error_code))

    def _match(
        self,
        messages: list[Any],
        to: str,
        body: str,
        earliest: datetime,
        exclude: Collection[str] = (),
    ) -> str | None:
        for item in messages:
            if not isinstance(item, dict):
                continue
            direction = item.get("direction")
            if not (isinstance(direction, str) and direction.startswith("outbound")):
                continue
            if item.get("to") != to or not _same_body(item.get("body"), body):
                continue
            if not self._ours(item):
                continue
            created = _rfc2822(item.get("date_created"))
            if created is not None and created >= earliest:
                sid = item.get("sid")
                if isinstance(sid, str) and sid and sid not in exclude:
                    return sid
        return None

    def _ours(self, item: dict[str, Any]) -> bool:
        """Whether a listed message came from this sender: its number (filtered by Twilio
        too), or its Messaging Service (whose sender number may not be chosen yet)."""
        if self.from_number and item.get("from") not in (None, self.from_number):
            return False
        if self.messaging_service_sid and not self.from_number:
            return item.get("messaging_service_sid") == self.messaging_service_sid
        return True


def _error(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """Twilio's error JSON: {"code": 21211, "message": ..., "more_info": ..., "status": 400}."""
    code = body.get("code")
    message = body.get("message")
    return (
        str(code) if isinstance(code, int | str) and str(code).strip() else None,
        message if isinstance(message, str) else None,
    )


def _same_body(listed: object, body: str) -> bool:
    return isinstance(listed, str) and (listed == body or listed.strip() == body.strip())


def _rfc2822(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

"""A fake Twilio Messages API: a real HTTP server on 127.0.0.1 for provider tests.

A tiny Starlette app served by uvicorn on a free port, in the test's event loop:

    async with FakeTwilio() as twilio:
        provider = TwilioProvider(http, account_sid=twilio.account_sid,
                                  auth_token=twilio.auth_token, from_number=twilio.from_number,
                                  api_base=twilio.url)
        twilio.script("+14155550123", Answer.error(21211))
        ...
        assert twilio.sends_to("+14155550123") == 1

It checks basic auth (401 with Twilio's error JSON otherwise), answers 201 with a message
JSON, plays scripted answers per destination (an error code with its HTTP status, 429 with
Retry-After, 5xx, a delay), refuses a `ValidityPeriod` outside 1-36,000 as Twilio does
(400, 21624), records every create request, fetches one message
(`GET .../Messages/{sid}.json`), and lists messages for `find_sent`.

The list keeps Twilio's documented contract, including its unkind parts
(https://www.twilio.com/docs/messaging/api/message-resource#read-multiple-message-resources;
twilio-oai `spec/json/twilio_api_v2010.json`, operation ListMessage):
- sorted by `date_sent`, newest first; a message still in Twilio's queue (`queued`,
  `accepted`, `scheduled`) has `date_sent` null, and where such messages sort is not
  documented: `queued_placement` puts them `"first"` or `"last"` (tests try both);
- filters `To`, `From` (exact), `DateSent` / `DateSent<` / `DateSent>` on the sent date (a
  message with no `date_sent` never matches a date filter);
- `PageSize` (default 50, at most 1000; `max_page_size` lowers the cap, as a test needs
  small pages without thousands of messages), `next_page_uri` null on the last page;
- list calls can be scripted to fail (`script_list`: 429, 5xx, slow past a timeout).
A created message stays `queued` with no `date_sent` until the test says it went out
(`mark_sent`), as at Twilio while its queue holds it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import socket
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

API_VERSION = "2010-04-01"


@dataclass(frozen=True, slots=True)
class Answer:
    """How the fake answers one create call."""

    status: int = 201
    code: int | None = None
    message: str | None = None
    retry_after: str | None = None
    delay: float = 0.0
    # Whether the message exists afterwards (default: when the answer is a 2xx). A 500
    # that created the message anyway is how an "outcome unknown" looks from outside.
    created: bool | None = None

    @classmethod
    def error(cls, code: int, status: int = 400, message: str | None = None) -> Answer:
        return cls(status=status, code=code, message=message or f"error {code}")

    @classmethod
    def throttled(cls, retry_after: str | None = "7") -> Answer:
        return cls(status=429, code=20429, message="Too Many Requests", retry_after=retry_after)

    @classmethod
    def server_error(cls, status: int = 500, *, created: bool = False) -> Answer:
        return cls(status=status, code=20500, message="Internal Server Error", created=created)

    @classmethod
    def slow(cls, delay: float, *, created: bool = True) -> Answer:
        return cls(delay=delay, created=created)

    @property
    def creates(self) -> bool:
        return self.created if self.created is not None else 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """One create call as the fake received it (authenticated or not)."""

    to: str | None
    body: str | None
    from_number: str | None
    messaging_service_sid: str | None
    status_callback: str | None
    form: list[tuple[str, str]]
    authenticated: bool
    validity_period: str | None = None  # `ValidityPeriod` as sent (absent: None)


@dataclass
class FakeTwilio:
    account_sid: str = "AC" + "f" * 32
    auth_token: str = "fake-auth-token"
    from_number: str = "+15005550006"
    host: str = "127.0.0.1"
    requests: list[CreateRequest] = field(default_factory=list)
    list_requests: list[dict[str, str]] = field(default_factory=list)
    # The sid of each fetch (`GET .../Messages/{sid}.json`), authenticated or not, in order.
    fetches: list[str] = field(default_factory=list)
    # Every message the fake holds, oldest first, as Twilio's Message JSON.
    messages: list[dict[str, Any]] = field(default_factory=list)
    # Where messages with no date_sent (still queued) sort in the list: undocumented.
    queued_placement: str = "last"
    max_page_size: int = 1000
    _scripts: dict[str, deque[Answer]] = field(default_factory=dict)
    _list_scripts: deque[Answer] = field(default_factory=deque)
    _fetch_scripts: deque[Answer] = field(default_factory=deque)
    _always: dict[str, Answer] = field(default_factory=dict)
    _hangs: dict[str, asyncio.Event] = field(default_factory=dict)  # see `hang`
    _hanging: dict[str, int] = field(default_factory=dict)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None
    _stopping: asyncio.Event | None = None
    port: int = 0

    # -- scripting and inspection ------------------------------------------------------

    def script(self, to: str, *answers: Answer) -> None:
        """The next create calls to `to` get these answers, in order, then the default."""
        self._scripts.setdefault(to, deque()).extend(answers)

    def script_list(self, *answers: Answer) -> None:
        """The next list calls get these answers (a 2xx one lists), in order, then lists."""
        self._list_scripts.extend(answers)

    def script_fetch(self, *answers: Answer) -> None:
        """The next fetch calls get these answers (a 2xx one fetches), in order."""
        self._fetch_scripts.extend(answers)

    def mark_sent(
        self,
        sid: str,
        status: str = "sent",
        at: datetime | None = None,
        error_code: int | None = None,
    ) -> None:
        """The message left Twilio's queue: it gets its date_sent (and a new status, with
        its error code: `undelivered` 30003, say, as Twilio's Message JSON has it)."""
        [message] = [m for m in self.messages if m["sid"] == sid]
        sent = (at or datetime.now(UTC)).astimezone(UTC)
        message["_sent"] = sent
        message["date_sent"] = message["date_updated"] = email.utils.format_datetime(sent)
        message["status"] = status
        message["error_code"] = error_code
        message["error_message"] = None if error_code is None else f"error {error_code}"

    def always(self, to: str, answer: Answer) -> None:
        """Every create call to `to` (after its scripted ones) gets this answer."""
        self._always[to] = answer

    def reset(self) -> None:
        """Forget requests, messages and scripts (one server can serve many tests)."""
        self.requests.clear()
        self.list_requests.clear()
        self.fetches.clear()
        self._fetch_scripts.clear()
        self.messages.clear()
        self._scripts.clear()
        self._always.clear()
        self._list_scripts.clear()
        self.queued_placement = "last"
        self.max_page_size = 1000
        self._hangs.clear()

    def sends_to(self, to: str) -> int:
        """Create calls received for `to` (authenticated ones)."""
        return sum(1 for r in self.requests if r.to == to and r.authenticated)

    def add_message(
        self,
        to: str,
        body: str,
        *,
        created_at: datetime | None = None,
        direction: str = "outbound-api",
        status: str = "delivered",
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
    ) -> str:
        """Put a message in the account's log (as if sent earlier); its sid. A message in
        a queued state has no date_sent; any other was sent when it was created."""
        message = self._store(
            to,
            body,
            from_number or self.from_number,
            messaging_service_sid,
            created_at,
            direction,
            status,
        )
        return str(message["sid"])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def auth(self) -> tuple[str, str]:
        return self.account_sid, self.auth_token

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit it: without it, Nagle + delayed ACK cost 40 ms a request.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app(), lifespan="off", log_level="warning", access_log=False, http="h11"
        )
        self._server = uvicorn.Server(config)
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what stopped it
                raise RuntimeError("the fake Twilio server stopped at start-up")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task

    async def __aenter__(self) -> FakeTwilio:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- the HTTP app ------------------------------------------------------------------

    def app(self) -> Starlette:
        path = f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json"
        one = f"/{API_VERSION}/Accounts/{{account_sid}}/Messages/{{sid}}.json"
        return Starlette(
            routes=[
                Route(path, self._create, methods=["POST"]),
                Route(path, self._list, methods=["GET"]),
                Route(one, self._fetch, methods=["GET"]),
            ]
        )

    def _authenticated(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return (
            user == self.account_sid
            and password == self.auth_token
            and request.path_params["account_sid"] == self.account_sid
        )

    @staticmethod
    def _error(
        status: int, code: int, message: str, headers: dict[str, str] | None = None
    ) -> Response:
        return JSONResponse(
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            status_code=status,
            headers=headers,
        )

    async def _create(self, request: Request) -> Response:
        form = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True)
        values = dict(form)
        authenticated = self._authenticated(request)
        to = values.get("To")
        self.requests.append(
            CreateRequest(
                to=to,
                body=values.get("Body"),
                from_number=values.get("From"),
                messaging_service_sid=values.get("MessagingServiceSid"),
                status_callback=values.get("StatusCallback"),
                form=form,
                authenticated=authenticated,
                validity_period=values.get("ValidityPeriod"),
            )
        )
        if not authenticated:
            return self._error(401, 20003, "Authenticate")
        if not to:
            return self._error(400, 21604, "A 'To' phone number is required.")
        if "Body" not in values:
            return self._error(400, 21602, "Message body is required.")
        if not (values.get("From") or values.get("MessagingServiceSid")):
            return self._error(400, 21603, "A 'From' phone number is required.")
        if not _valid_period(values.get("ValidityPeriod")):
            return self._error(400, 21624, "Invalid validity period value")
        await self._hang(to)
        answer = self._next_answer(to)
        if answer.delay and self._stopping is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), answer.delay)
        message = None
        if answer.creates:
            message = self._store(
                to,
                values["Body"],
                # A Messaging Service picks the sender later: `from` is null until then
                # ("a sender hasn't yet been assigned", message-resource page, num_segments).
                values.get("From"),
                values.get("MessagingServiceSid"),
                None,
                "outbound-api",
                "accepted" if values.get("MessagingServiceSid") else "queued",
            )
        if 200 <= answer.status < 300:
            assert message is not None
            return JSONResponse(message, status_code=answer.status)
        headers = {"Retry-After": answer.retry_after} if answer.retry_after else None
        return self._error(answer.status, answer.code or 20500, answer.message or "error", headers)

    def _next_answer(self, to: str) -> Answer:
        queue = self._scripts.get(to)
        if queue:
            return queue.popleft()
        return self._always.get(to, Answer())

    def _store(
        self,
        to: str,
        body: str,
        from_number: str | None,
        messaging_service_sid: str | None,
        created_at: datetime | None,
        direction: str,
        status: str,
    ) -> dict[str, Any]:
        sid = "SM" + uuid.uuid4().hex
        created = (created_at or datetime.now(UTC)).astimezone(UTC)
        stamp = email.utils.format_datetime(created)
        sent = None if status in QUEUED else created
        message: dict[str, Any] = {
            "sid": sid,
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "to": to,
            "from": from_number,
            "body": body,
            "status": status,
            "direction": direction,
            "messaging_service_sid": messaging_service_sid,
            "num_segments": "1",
            "num_media": "0",
            "error_code": None,
            "error_message": None,
            "price": None,
            "price_unit": "USD",
            "date_created": stamp,
            "date_updated": stamp,
            "date_sent": None if sent is None else stamp,
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json",
            "_created": created,  # for sorting and filtering; dropped from answers
            "_sent": sent,
        }
        self.messages.append(message)
        return {k: v for k, v in message.items() if not k.startswith("_")}

    async def _fetch(self, request: Request) -> Response:
        """`GET .../Messages/{sid}.json`: the message, or 404 with code 20404 (or what
        `script_fetch` says: 429, 5xx, slow past a timeout)."""
        sid = request.path_params["sid"]
        self.fetches.append(sid)
        if not self._authenticated(request):
            return self._error(401, 20003, "Authenticate")
        if self._fetch_scripts:
            answer = self._fetch_scripts.popleft()
            if answer.delay and self._stopping is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), answer.delay)
            if not 200 <= answer.status < 300:
                headers = {"Retry-After": answer.retry_after} if answer.retry_after else None
                code, words = answer.code or 20500, answer.message or "error"
                return self._error(answer.status, code, words, headers)
        for message in self.messages:
            if message["sid"] == sid:
                return JSONResponse(_public(message))
        return self._error(404, 20404, f"The requested resource {request.url.path} was not found")

    async def _list(self, request: Request) -> Response:
        if not self._authenticated(request):
            return self._error(401, 20003, "Authenticate")
        query = dict(request.query_params)
        self.list_requests.append(query)
        if self._list_scripts:
            answer = self._list_scripts.popleft()
            if answer.delay and self._stopping is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), answer.delay)
            if not 200 <= answer.status < 300:
                headers = {"Retry-After": answer.retry_after} if answer.retry_after else None
                code, message = answer.code or 20500, answer.message or "error"
                return self._error(answer.status, code, message, headers)
        found = [m for m in self.messages if "To" not in query or m["to"] == query["To"]]
        if "From" in query:
            found = [m for m in found if m["from"] == query["From"]]
        for key, keep in _DATE_FILTERS.items():
            if key in query:
                day = date.fromisoformat(query[key].lstrip("=")[:10])
                found = [m for m in found if m["_sent"] and keep(m["_sent"].date(), day)]
        found.sort(key=self._order)
        size = max(1, min(self.max_page_size, int(query.get("PageSize", "50"))))
        page = int(query.get("Page", "0"))
        chunk = found[page * size : (page + 1) * size]
        uri = request.url.path
        next_page_uri = None
        if (page + 1) * size < len(found):
            following = {**query, "Page": str(page + 1), "PageToken": f"PA{uuid.uuid4().hex}"}
            next_page_uri = f"{uri}?{urlencode(following)}"
        return JSONResponse(
            {
                "messages": [_public(m) for m in chunk],
                "page": page,
                "page_size": size,
                "start": page * size,
                "end": page * size + max(len(chunk) - 1, 0),
                "uri": f"{uri}?{request.url.query}",
                "next_page_uri": next_page_uri,
                "previous_page_uri": None,
                "first_page_uri": f"{uri}?{urlencode({**query, 'Page': '0'})}",
            }
        )

    def _order(self, message: dict[str, Any]) -> tuple[int, float, float]:
        """Newest date_sent first; the messages with none first or last, newest created
        first among them (that part is the fake's guess: Twilio does not say)."""
        sent: datetime | None = message["_sent"]
        created: datetime = message["_created"]
        if sent is None:
            group = 0 if self.queued_placement == "first" else 2
            return group, -created.timestamp(), 0.0
        return 1, -sent.timestamp(), -created.timestamp()

    # -- hanging sends (an option: only tests that call `hang` see it) -----------------

    def hang(self, to: str, until: asyncio.Event) -> None:
        """Create calls to `to` get no answer until `until` is set (or the fake stops):
        a send that hangs, as one does until the client's timeout in a provider brownout.
        `hanging(to)`: how many such calls are waiting now."""
        self._hangs[to] = until

    def hanging(self, to: str) -> int:
        return self._hanging.get(to, 0)

    async def _hang(self, to: str) -> None:
        until = self._hangs.get(to)
        if until is None:
            return
        self._hanging[to] = self._hanging.get(to, 0) + 1
        try:
            waits = [until.wait()] + ([self._stopping.wait()] if self._stopping else [])
            tasks = [asyncio.ensure_future(wait) for wait in waits]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
        finally:
            self._hanging[to] -= 1


# Statuses of a message Twilio still holds in its queue: no date_sent yet.
QUEUED = frozenset({"queued", "accepted", "scheduled"})

_DATE_FILTERS: dict[str, Callable[[date, date], bool]] = {
    "DateSent": lambda sent, day: sent == day,
    "DateSent<": lambda sent, day: sent <= day,
    "DateSent>": lambda sent, day: sent >= day,
    "DateSent<=": lambda sent, day: sent <= day,
    "DateSent>=": lambda sent, day: sent >= day,
}


def _public(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if not k.startswith("_")}


def _valid_period(value: str | None) -> bool:
    """Twilio's `ValidityPeriod`: absent, or an integer from 1 to 36,000 (else error 21624,
    https://www.twilio.com/docs/api/errors/21624)."""
    if value is None:
        return True
    return value.isascii() and value.isdigit() and 1 <= int(value) <= 36_000

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
(400, 21624), records every create request, and lists messages for
`find_sent` (`To`, `DateSent>=`, paging through `next_page_uri`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import socket
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    # Every message the fake holds, oldest first, as Twilio's Message JSON.
    messages: list[dict[str, Any]] = field(default_factory=list)
    _scripts: dict[str, deque[Answer]] = field(default_factory=dict)
    _always: dict[str, Answer] = field(default_factory=dict)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None
    _stopping: asyncio.Event | None = None
    port: int = 0

    # -- scripting and inspection ------------------------------------------------------

    def script(self, to: str, *answers: Answer) -> None:
        """The next create calls to `to` get these answers, in order, then the default."""
        self._scripts.setdefault(to, deque()).extend(answers)

    def always(self, to: str, answer: Answer) -> None:
        """Every create call to `to` (after its scripted ones) gets this answer."""
        self._always[to] = answer

    def reset(self) -> None:
        """Forget requests, messages and scripts (one server can serve many tests)."""
        self.requests.clear()
        self.list_requests.clear()
        self.messages.clear()
        self._scripts.clear()
        self._always.clear()

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
    ) -> str:
        """Put a message in the account's log (as if sent earlier); its sid."""
        message = self._store(to, body, self.from_number, None, created_at, direction, status)
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
        return Starlette(
            routes=[
                Route(path, self._create, methods=["POST"]),
                Route(path, self._list, methods=["GET"]),
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
        answer = self._next_answer(to)
        if answer.delay and self._stopping is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), answer.delay)
        message = None
        if answer.creates:
            message = self._store(
                to,
                values["Body"],
                values.get("From") or self.from_number,
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
        from_number: str,
        messaging_service_sid: str | None,
        created_at: datetime | None,
        direction: str,
        status: str,
    ) -> dict[str, Any]:
        sid = "SM" + uuid.uuid4().hex
        created = (created_at or datetime.now(UTC)).astimezone(UTC)
        stamp = email.utils.format_datetime(created)
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
            "date_sent": stamp,
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json",
            "_created": created,  # for filtering; dropped from answers
        }
        self.messages.append(message)
        return {k: v for k, v in message.items() if not k.startswith("_")}

    async def _list(self, request: Request) -> Response:
        if not self._authenticated(request):
            return self._error(401, 20003, "Authenticate")
        query = dict(request.query_params)
        self.list_requests.append(query)
        found = [m for m in self.messages if "To" not in query or m["to"] == query["To"]]
        if "From" in query:
            found = [m for m in found if m["from"] == query["From"]]
        since = query.get("DateSent>=")
        if since:
            day = datetime.fromisoformat(since).date()
            found = [m for m in found if m["_created"].date() >= day]
        found.sort(key=lambda m: m["_created"], reverse=True)
        size = max(1, min(1000, int(query.get("PageSize", "50"))))
        page = int(query.get("Page", "0"))
        chunk = found[page * size : (page + 1) * size]
        uri = request.url.path
        next_page_uri = None
        if (page + 1) * size < len(found):
            next_page_uri = f"{uri}?{urlencode({**query, 'Page': str(page + 1)})}"
        return JSONResponse(
            {
                "messages": [{k: v for k, v in m.items() if not k.startswith("_")} for m in chunk],
                "page": page,
                "page_size": size,
                "uri": f"{uri}?{request.url.query}",
                "next_page_uri": next_page_uri,
                "previous_page_uri": None,
                "first_page_uri": f"{uri}?{urlencode({**query, 'Page': '0'})}",
            }
        )


def _valid_period(value: str | None) -> bool:
    """Twilio's `ValidityPeriod`: absent, or an integer from 1 to 36,000 (else error 21624,
    https://www.twilio.com/docs/api/errors/21624)."""
    if value is None:
        return True
    return value.isascii() and value.isdigit() and 1 <= int(value) <= 36_000

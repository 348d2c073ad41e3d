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

Status callbacks (an option: `FakeTwilio(callbacks=True)`, or `script_life` per number). A
message the fake accepts then lives a `Life`: its status moves (`sent`, then `delivered`, by
default) and each move is POSTed to the message's `StatusCallback` as Twilio does it
(https://www.twilio.com/docs/messaging/guides/track-outbound-message-status ;
docs/providers.md §1.3): `application/x-www-form-urlencoded`, the fields MessageSid, SmsSid,
MessageStatus, SmsStatus, AccountSid, From, To, ApiVersion (MessagingServiceSid with a
Messaging Service, ErrorCode on `failed` / `undelivered`), signed in `X-Twilio-Signature`
over the full StatusCallback URL, query string included, with the account's auth token
(https://www.twilio.com/docs/usage/webhooks/webhooks-security ; docs/providers.md §1.4). No
callback for the initial status; with a Messaging Service, `accepted` → `queued` calls back
(https://www.twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks).
Twilio's unkind parts are options of the life: a callback posted late (a later one overtakes
it: "no guarantee that the status callback requests always arrive at your endpoint in the
order they were sent", track-outbound guide), posted twice, or lost (the status moves all the
same). The message the fake holds follows its life, so a fetch or a list shows where it is.
Each callback is posted once (retries are a connection override's business,
https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides) and recorded with
the answer it got (`posted`); lives run as tasks on the fake's loop, never holding up an
answer, and `stop` cancels them. `settled()` waits until every life has run its course.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
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

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.webhooks import FORM, twilio_signature

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
    # The message is accepted (stored, its life begun) before the delay, not after it: the
    # answer is what is late, not Twilio's work (`lost`).
    accepted_first: bool = False

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

    @classmethod
    def lost(cls, delay: float = 60.0) -> Answer:
        """The message is accepted at once (stored; its callbacks go out), but its answer
        comes only after `delay` (or when the fake stops): past the client's timeout, an
        answer lost on the way while Twilio went on with the message."""
        return cls(delay=delay, created=True, accepted_first=True)

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


@dataclass(frozen=True, slots=True)
class Step:
    """One status a message takes in its life at Twilio, and the callback that tells of it."""

    status: str
    error_code: int | None = None  # Twilio's ErrorCode (on `failed` / `undelivered`)
    after: float = 0.0  # seconds after the previous step (the first: after the create)
    # Its callback is posted this many seconds after the status changed: a later step whose
    # callback is due sooner overtakes it (callbacks out of order).
    late: float = 0.0
    copies: int = 1  # how many times its callback is posted: 2, a duplicate; 0, lost


@dataclass(frozen=True, slots=True)
class Life:
    """What becomes of an accepted message: its steps, in the order Twilio takes them.

    The default is a message delivered: `sent`, then `delivered` (the initial `queued` has
    no callback). `Life.undelivered(30003)`, `Life.failed(30008)`; then `.late("sent", 0.2)`,
    `.repeat("delivered")`, `.lose("sent")` to be unkind.
    """

    steps: tuple[Step, ...] = (Step("sent"), Step("delivered"))

    @classmethod
    def delivered(cls, every: float = 0.0) -> Life:
        return cls((Step("sent", after=every), Step("delivered", after=every)))

    @classmethod
    def undelivered(cls, code: int = 30003, every: float = 0.0) -> Life:
        """Sent, then the carrier's receipt says not delivered (30003: unreachable)."""
        return cls((Step("sent", after=every), Step("undelivered", code, after=every)))

    @classmethod
    def failed(cls, code: int = 30008, every: float = 0.0) -> Life:
        """Never sent: `failed` with its code (30008: unknown error)."""
        return cls((Step("failed", code, after=every),))

    @classmethod
    def sent(cls, every: float = 0.0) -> Life:
        """Sent, and no delivery receipt ever comes: the message stays `sent`."""
        return cls((Step("sent", after=every),))

    @classmethod
    def silent(cls) -> Life:
        """Accepted and never heard of again: it stays in Twilio's queue."""
        return cls(())

    def late(self, status: str, seconds: float) -> Life:
        """The callback for `status` is posted `seconds` after the status changed."""
        return self._change(status, late=seconds)

    def repeat(self, status: str, times: int = 2) -> Life:
        """The callback for `status` is posted `times` times."""
        return self._change(status, copies=times)

    def lose(self, status: str) -> Life:
        """The callback for `status` is never posted (the message's status moves anyway)."""
        return self._change(status, copies=0)

    def _change(self, status: str, **changes: Any) -> Life:
        found = [i for i, step in enumerate(self.steps) if step.status == status]
        if not found:
            raise ValueError(f"no {status!r} step in {self}")
        index = found[0]
        steps = list(self.steps)
        steps[index] = dataclasses.replace(steps[index], **changes)
        return Life(tuple(steps))


@dataclass(frozen=True, slots=True)
class PostedCallback:
    """One status callback the fake posted, and what it got back."""

    sid: str
    status: str
    url: str
    form: list[tuple[str, str]]
    signature: str  # X-Twilio-Signature as sent
    answer: int | None  # the receiver's HTTP status; None when no answer came
    error: str | None = None  # why no answer came (connection refused, timeout...)


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
    # Status callbacks: the life of every accepted message (True: `Life()`, delivered), unless
    # `script_life` says otherwise for its number; False, no life (it stays queued).
    callbacks: bool | Life = False
    # Every status callback posted, in the order posted (see `PostedCallback`).
    posted: list[PostedCallback] = field(default_factory=list)
    # Seconds a callback waits for its answer: Twilio's default connect and read timeouts
    # (https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides: ct, rt).
    callback_connect_timeout: float = 5.0
    callback_timeout: float = 15.0
    _scripts: dict[str, deque[Answer]] = field(default_factory=dict)
    _life_scripts: dict[str, deque[Life]] = field(default_factory=dict)
    _lives: set[asyncio.Task[None]] = field(default_factory=set)
    _life_errors: list[BaseException] = field(default_factory=list)
    _http: httpx.AsyncClient | None = None
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

    def script_life(self, to: str, *lives: Life) -> None:
        """The next messages to `to` the fake accepts live these lives, in order, then the
        default (`callbacks`)."""
        self._life_scripts.setdefault(to, deque()).extend(lives)

    def posted_for(self, sid: str) -> list[PostedCallback]:
        """The status callbacks posted for message `sid`, in the order posted."""
        return [callback for callback in self.posted if callback.sid == sid]

    def status_of(self, sid: str) -> str:
        """The status of message `sid` as the fake holds it (as a fetch would show it)."""
        [message] = [m for m in self.messages if m["sid"] == sid]
        return str(message["status"])

    async def settled(self, within: float = 10.0) -> None:
        """Wait until every message's life has run its course, its callbacks all posted;
        raise what went wrong in one, if anything did."""
        async with asyncio.timeout(within):
            while self._lives:
                await asyncio.wait(list(self._lives))
        if self._life_errors:
            raise self._life_errors[0]

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
        for task in self._lives:
            task.cancel()
        self.callbacks = False
        self.posted.clear()
        self._life_scripts.clear()
        self._life_errors.clear()

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
        self._http = self._callback_client()
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what stopped it
                raise RuntimeError("the fake Twilio server stopped at start-up")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        # No life starts once stopping is set; the ones under way end here.
        lives = list(self._lives)
        for task in lives:
            task.cancel()
        await asyncio.gather(*lives, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None
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
        message = self._accept(values) if answer.creates and answer.accepted_first else None
        if answer.delay and self._stopping is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), answer.delay)
        if answer.creates and message is None:
            message = self._accept(values)
        if 200 <= answer.status < 300:
            assert message is not None
            return JSONResponse(message, status_code=answer.status)
        headers = {"Retry-After": answer.retry_after} if answer.retry_after else None
        return self._error(answer.status, answer.code or 20500, answer.message or "error", headers)

    def _accept(self, values: dict[str, str]) -> dict[str, Any]:
        """Store the message a create asked for (its JSON, as the answer has it) and begin
        its life, if it has one."""
        message = self._store(
            values["To"],
            values["Body"],
            # A Messaging Service picks the sender later: `from` is null until then
            # ("a sender hasn't yet been assigned", message-resource page, num_segments).
            values.get("From"),
            values.get("MessagingServiceSid"),
            None,
            "outbound-api",
            "accepted" if values.get("MessagingServiceSid") else "queued",
        )
        life = self._next_life(values["To"])
        if life is not None:
            self._begin_life(message["sid"], values.get("StatusCallback"), life)
        return message

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

    # -- status callbacks (an option: `callbacks`, `script_life`) -----------------------

    def _next_life(self, to: str) -> Life | None:
        queue = self._life_scripts.get(to)
        if queue:
            return queue.popleft()
        if self.callbacks is True:
            return Life()
        return self.callbacks or None

    def _begin_life(self, sid: str, url: str | None, life: Life) -> None:
        if self._stopping is not None and self._stopping.is_set():
            return  # the fake is going away: nothing more happens at "Twilio"
        [message] = [m for m in self.messages if m["sid"] == sid]
        task = asyncio.create_task(self._live(message, url, life), name=f"life of {sid}")
        self._lives.add(task)
        task.add_done_callback(self._life_ended)

    def _life_ended(self, task: asyncio.Task[None]) -> None:
        self._lives.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self._life_errors.append(error)

    async def _live(self, message: dict[str, Any], url: str | None, life: Life) -> None:
        """Play a life: each step moves the message's status at its time, and its callback
        goes out `late` seconds after that, `copies` times. One at a time, in the order
        due (a step before its callbacks when both are due at once; a slow receiver holds
        up what comes after it)."""
        steps = list(life.steps)
        if message["status"] == "accepted" and [s.status for s in steps[:1]] != ["queued"]:
            # A Messaging Service's message: accepted, then queued with a callback
            # (outbound-message-status-in-status-callbacks guide).
            steps.insert(0, Step("queued"))
        due: list[tuple[float, int, int, Step]] = []  # (seconds, step, 0 move / 1 post, step)
        at = 0.0
        for index, step in enumerate(steps):
            at += step.after
            due.append((at, index, 0, step))
            due.extend((at + step.late, index, 1, step) for _ in range(step.copies))
        due.sort(key=lambda item: item[:3])
        loop = asyncio.get_running_loop()
        start = loop.time()
        for seconds, _, post, step in due:
            wait = start + seconds - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not post:
                self._move(message, step)
            elif url is not None:
                await self._post(message, url, step)

    def _move(self, message: dict[str, Any], step: Step) -> None:
        """The message takes the step's status, as a fetch or a list will show it."""
        now = datetime.now(UTC)
        stamp = email.utils.format_datetime(now)
        if message["_sent"] is None and step.status not in QUEUED:
            message["_sent"], message["date_sent"] = now, stamp
        if message["from"] is None:  # the Messaging Service picked its sender
            message["from"] = self.from_number
        message["status"] = step.status
        message["date_updated"] = stamp
        message["error_code"] = step.error_code
        message["error_message"] = None if step.error_code is None else f"error {step.error_code}"

    def _callback_form(self, message: dict[str, Any], step: Step) -> list[tuple[str, str]]:
        """What Twilio posts for a status (track-outbound guide; docs/providers.md §1.3)."""
        sid = str(message["sid"])
        form = [
            ("ApiVersion", API_VERSION),
            ("AccountSid", self.account_sid),
            ("From", str(message["from"] or self.from_number)),
            ("To", str(message["to"])),
            ("MessageSid", sid),
            ("MessageStatus", step.status),
            ("SmsSid", sid),
            ("SmsStatus", step.status),
        ]
        if message["messaging_service_sid"]:
            form.append(("MessagingServiceSid", str(message["messaging_service_sid"])))
        if step.error_code is not None and step.status in ("failed", "undelivered"):
            form.append(("ErrorCode", str(step.error_code)))
        return form

    async def _post(self, message: dict[str, Any], url: str, step: Step) -> None:
        """POST one callback, signed over the full URL as given, "scheme through the end of
        the query string" (docs/providers.md §1.4; the webhooks-security page), and record
        it with the answer it got. Once."""
        form = self._callback_form(message, step)
        signature = twilio_signature(url, form, self.auth_token)
        if self._http is None:
            self._http = self._callback_client()
        answer: int | None = None
        error: str | None = None
        try:
            response = await self._http.post(
                url,
                content=urlencode(form),
                headers={"Content-Type": FORM, "X-Twilio-Signature": signature},
            )
            answer = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        self.posted.append(
            PostedCallback(str(message["sid"]), step.status, url, form, signature, answer, error)
        )

    def _callback_client(self) -> httpx.AsyncClient:
        timeout = httpx.Timeout(self.callback_timeout, connect=self.callback_connect_timeout)
        return httpx.AsyncClient(timeout=timeout, trust_env=False)

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

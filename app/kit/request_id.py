"""Every request's id: the client's `X-Request-ID` when it is a sane one, else a new one;
kept in the request's state and sent back in the answer's `X-Request-ID` (ASGI middleware).
The audit trail records it beside each change (README, Audit trail)."""

from __future__ import annotations

import re
import uuid

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
# What a proxy or a client library sends (a UUID, a trace id): printable, no spaces.
_SANE = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == HEADER), None)
        value = given.decode() if given and _SANE.fullmatch(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = value
        encoded = value.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (HEADER, encoded)]
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id(request: Request) -> str:
    """The request's id (a new one for a request that did not pass the middleware)."""
    value = getattr(request.state, "request_id", None)
    return value if isinstance(value, str) else new_request_id()

"""The Twilio status callback's fast path: an edge component in front of the FastAPI stack.

Twilio posts a callback for every status change of every message (a 100,000-message
campaign brings two or three hundred thousand within minutes), and this is the service's
hottest path. The route (`app.webhooks.twilio.twilio_status_callback`) is the endpoint's
definition and its OpenAPI entry; this ASGI layer answers `POST` on its path with the same
three steps the route's dependencies take (`signed_form`, `status_receipt`, then the route
itself), without FastAPI's routing table, exception middleware and dependency solving per
callback. Refusals are the same problem+json (403, 400; 413 and 500 come from the layers
around it); any other method goes on to the route (405).

`python bench/webhooks.py` measures the service with it (see the README, "Webhooks").
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app import errors
from app.providers import callbacks
from app.webhooks.twilio import signed_form, status_receipt, twilio_status_callback


class TwilioStatusFastPath:
    """ASGI middleware: answers `POST` on the status callback's path, passes the rest on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != callbacks.TWILIO_STATUS
            or scope["method"] != "POST"
        ):
            await self.app(scope, receive, send)
            return
        response = await answer(Request(scope, receive))
        await response(scope, receive, send)


async def answer(request: Request) -> Response:
    """A signed status callback stored once (200), or refused before anything is written."""
    state = request.app.state
    try:
        form = await signed_form(request, state.sessionmaker, state.settings, state.secret_box)
        receipt = await status_receipt(form, request)
    except errors.AppError as exc:
        return errors.problem(exc.status_code, exc.slug, exc.title, exc.detail, **exc.extra)
    return await twilio_status_callback(receipt, state.inbox)

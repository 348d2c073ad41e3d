"""Twilio status callbacks, `POST /v1/webhooks/twilio/status`: the service's hottest path.

Twilio posts a callback for every status change of every message (a 100,000-message
campaign brings two or three hundred thousand within minutes), so this endpoint is a plain
ASGI layer in front of the FastAPI stack rather than a FastAPI route: no routing table,
exception middleware or dependency solving per callback. It does what a route would do, with
the same pieces as the other webhooks: the signature check of `webhooks.signed_form`, the
parsing of `receipts.parse_status_callback`, refusals rendered as the same problem+json
(403, 400, 405; 413 and 500 come from the layers around it), then one autocommitted INSERT
(`app.delivery.receipts.keep`) and an empty 200. The receipt applier applies the receipt
moments later. Its OpenAPI description is `OPENAPI`, merged into the app's document.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app import errors
from app.delivery import receipts
from app.providers.twilio import signature
from app.providers.twilio.webhooks import STATUS_FORM, signed_form, status_receipt
from app.providers.webhooks import REFUSALS

PATH = "/v1/webhooks/twilio/status"


class StatusCallbacks:
    """ASGI middleware: answers `POST PATH` itself, passes everything else on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if request.method == "POST":
            response = await answer(request)
        else:
            slug, title = errors.HTTP_PROBLEMS[405]
            detail = f"{request.method} is not allowed on this path; it takes POST."
            response = errors.problem(405, slug, title, detail, headers={"Allow": "POST"})
        await response(scope, receive, send)


async def answer(request: Request) -> Response:
    """A signed status callback stored once (200), or refused before anything is written."""
    state = request.app.state
    try:
        form = await signed_form(
            request,
            state.sessionmaker,
            state.settings,
            state.secret_box,
            request.headers.get(signature.HEADER),
        )
        receipt = await status_receipt(form)
    except errors.AppError as exc:
        return errors.problem(exc.status_code, exc.slug, exc.title, exc.detail, **exc.extra)
    await receipts.keep(state.inbox, receipt)
    return Response(status_code=200)


OPENAPI: dict[str, Any] = {
    "post": {
        "tags": ["webhooks"],
        "summary": "Twilio Status Callback",
        "operationId": "twilio_status_callback",
        "description": (
            "Twilio status callback (set as `StatusCallback` on every message this service "
            "sends): the receipt is stored once per event and answered with an empty 200; "
            "the receipt applier applies it through the status rules moments later, or as "
            "soon as its message id is recorded."
        ),
        "parameters": [
            {
                "name": "X-Twilio-Signature",
                "in": "header",
                "required": True,
                "description": (
                    "Base64 HMAC-SHA1 of PUBLIC_BASE_URL + path and the sorted form, by the "
                    "auth token of the account named by `AccountSid`"
                ),
                "schema": {"type": "string"},
            }
        ],
        **STATUS_FORM,
        "responses": {
            "200": {"description": "Stored (once per event); applied moments later"},
            **{str(status): response for status, response in REFUSALS.items()},
            "405": {
                "description": "Not a POST",
                "content": {errors.PROBLEM_JSON: {}},
            },
        },
    }
}

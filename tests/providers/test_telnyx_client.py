"""TelnyxProvider over the shared client, answers scripted with httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from app.providers.base import LookupAnswer, OutboundMessage, Provider
from app.providers.telnyx.client import TelnyxProvider
from app.sending.outcomes import Classification, Outcome

TO = "+14155550123"
API_KEY = "KEY0123456789"

Handler = Callable[[httpx.Request], httpx.Response]


def provider_with(handler: Handler, **kwargs: str) -> tuple[TelnyxProvider, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(record))
    options = {"from_number": "+15005550006", **kwargs}
    return TelnyxProvider(http, api_key=API_KEY, **options), seen


def errors(status: int, code: str, title: str = "error") -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"errors": [{"code": code, "title": title}]})

    return handler


async def test_accepted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={"data": {"id": "msg-1", "record_type": "message", "to": [{"status": "queued"}]}},
        )

    telnyx, seen = provider_with(handler)
    provider: Provider = telnyx
    result = await provider.send(
        OutboundMessage(TO, "Hello", status_callback="https://campanile.test/v1/webhooks/telnyx")
    )
    assert result.outcome is Outcome.accepted
    assert (result.provider_message_id, result.provider_status) == ("msg-1", "queued")
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == "https://api.telnyx.com/v2/messages"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert json.loads(request.content) == {
        "to": TO,
        "text": "Hello",
        "from": "+15005550006",
        "webhook_url": "https://campanile.test/v1/webhooks/telnyx",
    }


async def test_the_window_left_is_not_sent_telnyx_has_no_such_parameter() -> None:
    """docs/providers.md §2.5: Telnyx's message create documents no validity period."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": {"id": "msg-3", "to": [{"status": "queued"}]}})

    telnyx, seen = provider_with(handler)
    result = await telnyx.send(OutboundMessage(TO, "Hello", validity_seconds=600))
    assert result.outcome is Outcome.accepted
    [request] = seen
    assert json.loads(request.content) == {"to": TO, "text": "Hello", "from": "+15005550006"}


async def test_messaging_profile_and_api_base() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": {"id": "msg-2", "to": []}})

    telnyx, seen = provider_with(
        handler, from_number="", messaging_profile_id="prof-1", api_base="http://127.0.0.1:9/"
    )
    result = await telnyx.send(OutboundMessage(TO, "Hi"))
    assert result.outcome is Outcome.accepted and result.provider_status is None
    assert str(seen[0].url) == "http://127.0.0.1:9/v2/messages"
    assert json.loads(seen[0].content) == {"to": TO, "text": "Hi", "messaging_profile_id": "prof-1"}


@pytest.mark.parametrize(
    ("status", "code", "outcome", "classification"),
    [
        (409, "40300", Outcome.hard, Classification("opted_out", False)),
        (400, "40310", Outcome.hard, Classification("invalid_number", False)),
        (400, "40309", Outcome.hard, Classification("international_number", False)),
        (400, "40305", Outcome.hard, Classification("sending_error", False)),
        (400, "40318", Outcome.soft, Classification("sending_error", True)),
        (422, "10015", Outcome.hard, Classification("failed_to_create", False)),
        (401, "10009", Outcome.hard, Classification("sending_error", False)),
    ],
)
async def test_errors_map_through_the_table(
    status: int, code: str, outcome: Outcome, classification: Classification
) -> None:
    telnyx, _ = provider_with(errors(status, code, "Blocked"))
    result = await telnyx.send(OutboundMessage(TO, "Hi"))
    assert result.outcome is outcome
    assert result.error_code == code
    assert result.classification == classification
    assert not result.outcome_unknown
    assert result.error_message == "Blocked"


async def test_429_soft_with_retry_after() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "3"}, json={"errors": []})

    result = await provider_with(handler)[0].send(OutboundMessage(TO, "Hi"))
    assert result.outcome is Outcome.soft
    assert result.retry_after_seconds == 3.0
    assert not result.outcome_unknown
    assert result.classification == Classification("sending_error", True)


async def test_5xx_soft_outcome_unknown() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="<html>upstream down</html>")

    result = await provider_with(handler)[0].send(OutboundMessage(TO, "Hi"))
    assert result.outcome is Outcome.soft
    assert result.outcome_unknown
    assert result.error_message == "HTTP 503"


@pytest.mark.parametrize(
    ("exc", "unknown"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("slow"), False),
        (httpx.ReadTimeout("slow"), True),
        (httpx.RemoteProtocolError("dropped"), True),
        (httpx.ReadError("reset"), True),
    ],
)
async def test_transport_errors_are_soft(exc: Exception, unknown: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    result = await provider_with(handler)[0].send(OutboundMessage(TO, "Hi"))
    assert result.outcome is Outcome.soft
    assert result.outcome_unknown is unknown


async def test_find_sent_cannot_tell_without_a_lookup() -> None:
    """Telnyx has no per-number message list we can trust (README): never "not sent"."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("find_sent must not call Telnyx")

    telnyx, _ = provider_with(handler)
    found = await telnyx.find_sent(TO, datetime.now(UTC), "Hi")
    assert found.answer is LookupAnswer.cant_tell
    assert found.provider_message_id is None
    assert telnyx.holding_seconds == 36_000


def retrieved(status: str, code: str | None = None, message_id: str = "msg-1") -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        data: dict[str, object] = {
            "record_type": "message",
            "id": message_id,
            "to": [{"phone_number": TO, "status": status}],
            "errors": [{"code": code, "title": "error"}] if code else [],
        }
        return httpx.Response(200, json={"data": data})

    return handler


@pytest.mark.parametrize(
    ("status", "code", "classification"),
    [
        ("delivered", None, None),
        ("sent", None, None),
        ("delivery_unconfirmed", None, None),
        ("expired", None, Classification("sending_error", True)),
        ("delivery_failed", "40300", Classification("opted_out", False)),
    ],
)
async def test_fetch_status_retrieves_the_message(
    status: str, code: str | None, classification: Classification | None
) -> None:
    """`GET /v2/messages/{id}`: `data.to[0].status` and `data.errors[0].code`, classified as
    a webhook's would be; a digest of them as the event id (the same facts, the same id)."""
    telnyx, seen = provider_with(retrieved(status, code))
    fetched = await telnyx.fetch_status("msg-1")
    assert fetched.receipt is not None
    receipt = fetched.receipt
    assert (receipt.provider, receipt.provider_message_id) == ("telnyx", "msg-1")
    assert (receipt.provider_status, receipt.error_code) == (status, code)
    assert receipt.classification == classification
    assert (await telnyx.fetch_status("msg-1")).receipt == receipt
    assert [(r.method, str(r.url)) for r in seen] == [
        ("GET", "https://api.telnyx.com/v2/messages/msg-1")
    ] * 2
    assert seen[0].headers["authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize("status", [404, 429, 500, 503])
async def test_fetch_status_cannot_tell_on_errors(status: int) -> None:
    """404: older than Telnyx's 10 days, or not this account's; 429 and 5xx: not now."""
    telnyx, _ = provider_with(errors(status, "10005"))
    fetched = await telnyx.fetch_status("msg-1")
    assert fetched.receipt is None
    assert fetched.why == f"retrieving the message answered HTTP {status}"


async def test_fetch_status_cannot_tell_on_a_timeout_or_an_odd_answer() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    telnyx, _ = provider_with(timeout)
    assert (await telnyx.fetch_status("msg-1")).receipt is None
    telnyx, _ = provider_with(lambda request: httpx.Response(200, json={"data": {"id": "x"}}))
    assert (await telnyx.fetch_status("msg-1")).receipt is None
    telnyx, _ = provider_with(retrieved("delivered", message_id="another"))
    assert (await telnyx.fetch_status("msg-1")).receipt is None

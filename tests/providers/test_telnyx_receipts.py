"""Telnyx webhooks → Receipt / InboundMessage."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from app.providers.base import InboundMessage, MalformedWebhook, Receipt
from app.providers.telnyx.events import parse_event, parse_webhook
from app.sending.outcomes import Classification
from app.sending.status import Phase, phase_of

MESSAGE_ID = "40317159-3f0a-4dc0-a4a1-a1b3c1d2e3f4"


def event(
    event_type: str,
    status: str,
    errors: list[dict[str, Any]] | None = None,
    event_id: str = "evt-0001",
) -> dict[str, Any]:
    return {
        "data": {
            "event_type": event_type,
            "id": event_id,
            "occurred_at": "2026-03-01T15:04:05.123+00:00",
            "record_type": "event",
            "payload": {
                "id": MESSAGE_ID,
                "direction": "outbound",
                "type": "SMS",
                "from": {"phone_number": "+15005550006", "carrier": "Telnyx"},
                "to": [{"phone_number": "+14155550123", "status": status}],
                "text": "Hello",
                "errors": errors or [],
            },
        },
        "meta": {"attempt": 1, "delivered_to": "https://campanile.test/v1/webhooks/telnyx"},
    }


def test_message_sent() -> None:
    receipt = parse_webhook(json.dumps(event("message.sent", "sent")).encode())
    assert receipt == Receipt(
        provider="telnyx",
        provider_message_id=MESSAGE_ID,
        provider_status="sent",
        error_code=None,
        event_id="evt-0001",
        occurred_at=datetime(2026, 3, 1, 15, 4, 5, 123000, tzinfo=UTC),
        classification=None,
    )


def test_finalized_delivered() -> None:
    receipt = parse_event(event("message.finalized", "delivered", event_id="evt-2"))
    assert isinstance(receipt, Receipt)
    assert (receipt.provider_status, receipt.event_id, receipt.classification) == (
        "delivered",
        "evt-2",
        None,
    )


@pytest.mark.parametrize(
    ("status", "errors", "code", "expected"),
    [
        (
            "delivery_failed",
            [{"code": "40001", "title": "Not routable"}],
            "40001",
            Classification("unreachable_number", False, 1),
        ),
        (
            "delivery_failed",
            [{"code": 40008, "title": "Undeliverable"}],
            "40008",
            Classification("unknown", True, 0),
        ),
        ("sending_failed", [{"code": "40310"}], "40310", Classification("invalid_number", False)),
        ("sending_failed", [], None, Classification("unknown", False)),
        ("delivery_failed", [{"code": "49999"}], "49999", Classification("unknown", False)),
        # docs/providers.md §2.2: `expired` is a soft `sending_error`, whatever code comes with it.
        ("expired", [], None, Classification("sending_error", True)),
        ("expired", [{"code": "40014"}], "40014", Classification("sending_error", True)),
        ("expired", [{"code": "40003"}], "40003", Classification("sending_error", True)),
    ],
)
def test_failures(
    status: str, errors: list[dict[str, Any]], code: str | None, expected: Classification
) -> None:
    receipt = parse_event(event("message.finalized", status, errors))
    assert isinstance(receipt, Receipt)
    assert receipt.provider_status == status
    assert receipt.error_code == code
    assert receipt.classification == expected


@pytest.mark.parametrize("errors", [[], [{"code": "40002", "title": "Blocked as spam"}]])
def test_delivery_unconfirmed_is_no_failure(errors: list[dict[str, Any]]) -> None:
    """README, Webhooks: a delivery the carrier did not confirm, not a failure (no classification,
    whatever code comes with it); the status rules make it delivered, unconfirmed."""
    receipt = parse_event(event("message.finalized", "delivery_unconfirmed", errors))
    assert isinstance(receipt, Receipt)
    assert (receipt.provider_status, receipt.classification) == ("delivery_unconfirmed", None)
    assert phase_of(receipt.provider_status) is Phase.unconfirmed


def test_message_received() -> None:
    document = event("message.received", "webhook_delivered")
    document["data"]["payload"]["from"] = {"phone_number": "+14155550123"}
    document["data"]["payload"]["to"] = [
        {"phone_number": "+15005550006", "status": "webhook_delivered"}
    ]
    document["data"]["payload"]["text"] = "STOP"
    assert parse_event(document) == InboundMessage(
        "telnyx", MESSAGE_ID, "+14155550123", "+15005550006", "STOP"
    )


def test_other_events_are_not_ours() -> None:
    assert parse_event({"data": {"event_type": "call.initiated", "id": "x"}}) is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"data": []}',
        json.dumps({"data": {"event_type": "message.sent", "id": "e"}}).encode(),
        json.dumps(
            {"data": {"event_type": "message.sent", "id": "e", "payload": {"id": "m", "to": []}}}
        ).encode(),
        json.dumps(
            {
                "data": {
                    "event_type": "message.sent",
                    "payload": {"id": "m", "to": [{"status": "sent"}]},
                }
            }
        ).encode(),
    ],
)
def test_malformed(body: bytes) -> None:
    with pytest.raises(MalformedWebhook):
        parse_webhook(body)

"""Twilio status callbacks and inbound messages → Receipt / InboundMessage."""

from __future__ import annotations

import pytest
from starlette.datastructures import FormData, UploadFile

from app.providers.base import InboundMessage, MalformedWebhook
from app.providers.twilio.events import account_sid, event_id, parse_inbound, parse_status_callback
from app.sending.outcomes import Classification

SID = "SM" + "a" * 32
ACCOUNT = "AC" + "b" * 32


def callback(status: str, error_code: str | None = None) -> list[tuple[str, str]]:
    params = [
        ("AccountSid", ACCOUNT),
        ("ApiVersion", "2010-04-01"),
        ("From", "+15005550006"),
        ("To", "+14155550123"),
        ("MessageSid", SID),
        ("SmsSid", SID),
        ("MessageStatus", status),
        ("SmsStatus", status),
    ]
    if error_code is not None:
        params.append(("ErrorCode", error_code))
    return params


def test_delivered() -> None:
    receipt = parse_status_callback(callback("delivered"))
    assert receipt.provider == "twilio"
    assert receipt.provider_message_id == SID
    assert receipt.provider_status == "delivered"
    assert receipt.error_code is None
    assert receipt.classification is None
    assert receipt.event_id == event_id(SID, "delivered", None)
    assert account_sid(callback("delivered")) == ACCOUNT


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        ("undelivered", "30003", Classification("unreachable_number", False, 0)),
        ("undelivered", "30006", Classification("unreachable_number", False, 1)),
        ("failed", "30001", Classification("sending_error", True, 0)),
        ("undelivered", "30450", Classification("blocked", True, 0)),
        ("undelivered", "39999", Classification("unknown", False, 0)),  # not in the table
        ("failed", None, Classification("unknown", False, 0)),
        ("failed", "", Classification("unknown", False, 0)),
    ],
)
def test_failures_carry_their_classification(
    status: str, code: str | None, expected: Classification
) -> None:
    receipt = parse_status_callback(callback(status, code))
    assert receipt.classification == expected
    assert receipt.error_code == (code or None)


def test_duplicates_share_an_event_id_and_transitions_do_not() -> None:
    sent = parse_status_callback(callback("sent"))
    again = parse_status_callback(list(reversed(callback("sent"))))
    undelivered = parse_status_callback(callback("undelivered", "30003"))
    undelivered_other = parse_status_callback(callback("undelivered", "30005"))
    assert sent.event_id == again.event_id
    assert len({sent.event_id, undelivered.event_id, undelivered_other.event_id}) == 3


def test_legacy_names_and_case_are_accepted() -> None:
    receipt = parse_status_callback([("SmsSid", SID), ("SmsStatus", "Sent")])
    assert (receipt.provider_message_id, receipt.provider_status) == (SID, "sent")
    assert parse_status_callback(callback("delivered"), provider="simulator").provider == (
        "simulator"
    )


@pytest.mark.parametrize(
    "params",
    [
        [("MessageStatus", "sent")],
        [("MessageSid", SID)],
        [("MessageSid", " "), ("MessageStatus", "sent")],
        [],
    ],
)
def test_malformed_callbacks_are_refused(params: list[tuple[str, str]]) -> None:
    with pytest.raises(MalformedWebhook):
        parse_status_callback(params)


def test_inbound_message() -> None:
    params = [
        ("AccountSid", ACCOUNT),
        ("MessageSid", "SM" + "c" * 32),
        ("From", "+14155550123"),
        ("To", "+15005550006"),
        ("Body", " Stop "),
        ("NumMedia", "0"),
    ]
    assert parse_inbound(params) == InboundMessage(
        "twilio", "SM" + "c" * 32, "+14155550123", "+15005550006", " Stop "
    )
    assert parse_inbound(params).opt_out_type is None
    classified = parse_inbound([*params, ("OptOutType", "STOP")])
    assert classified.opt_out_type == "STOP"
    no_body = [p for p in params if p[0] != "Body"]
    assert parse_inbound(no_body).body == ""
    with pytest.raises(MalformedWebhook):
        parse_inbound([p for p in params if p[0] != "From"])


def test_form_data_from_the_endpoint() -> None:
    receipt = parse_status_callback(
        FormData(list[tuple[str, str | UploadFile]](callback("undelivered", "30005")))
    )
    assert receipt.error_code == "30005"
    assert receipt.classification == Classification("invalid_number", False, 1)

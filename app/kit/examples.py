"""The README walk-through's answers, as the OpenAPI document's examples: one school, one
contact list of five families, one campaign a few seconds after its launch (Ana delivered,
Ben re-attempting, three failed). Kept in one place so that the ids and figures agree from
one operation to the next; tests/test_openapi.py holds every example to its schema.
Taken from a run of the walk-through against `campanile serve` with the simulator."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict

Json = dict[str, Any]

SCHOOL_ID = "490a7c0f-0c62-46b4-a14f-1af8755d38f5"
LIST_ID = "814efb78-5df9-4e70-9ef2-c4ad417b3fbc"
CAMPAIGN_ID = "200dbcda-cd49-4b4d-bdee-0e6376238003"
BODY = "Hi {first_name}, room {room} opens at 9."

SCHOOL: Json = {
    "id": SCHOOL_ID,
    "name": "Lincoln High",
    "timezone": "America/Chicago",
    "default_region": "US",
    "allowed_country_codes": [1],
    "sending_window": None,
    "retry_policy": {
        "base_delay_seconds": 60,
        "max_delay_seconds": 3600,
        "max_retry_age_seconds": None,
    },
    "created_at": "2026-12-02T18:32:29.504456Z",
}
SCHOOL_WITH_KEY: Json = {**SCHOOL, "api_key": "cmp_CQJOj8Mpq98o5ldvU5_ZU2yq6sV9kHe87-bbBv_iMOM"}

API_KEY: Json = {
    "id": "cebefa99-d996-4622-b6b6-94ad84bec3f9",
    "name": "API key",
    "prefix": "cmp_CQJOj8Mp",
    "created_at": "2026-12-02T18:32:29.534799Z",
    "last_used_at": "2026-12-02T18:34:00Z",
    "revoked_at": None,
}

CONTACT_LIST: Json = {
    "id": LIST_ID,
    "name": "Grade 5 families",
    "contact_count": 5,
    "created_at": "2026-12-02T18:32:29.893201Z",
}

_FAMILIES = [
    ("+12015550100", "Ana", "Diaz", "12"),
    ("+12015550101", "Ben", "Lee", "14"),
    ("+12015550102", "Cy", "Ng", "12"),
    ("+12015550104", "Di", "Oh", "9"),
    ("+12015550109", "Ed", "Po", "9"),
]
CONTACTS: list[Json] = [
    {
        "id": str(number),
        "phone": phone,
        "first_name": first,
        "last_name": last,
        "fields": {"room": room},
        "created_at": "2026-12-02T18:32:30.114805Z",
    }
    for number, (phone, first, last, room) in enumerate(_FAMILIES, start=1)
]


def _failed(code: str, label: str, definition: str, resendable: bool | None, error: str) -> Json:
    return {
        "code": code,
        "label": label,
        "definition": definition,
        "resendable": resendable,
        "provider_error_code": error,
    }


_RECEIPTS_AT = "2026-12-02T18:32:33.542564Z"
_REFUSED_AT = "2026-12-02T18:32:31.384315Z"


def _outcome(status: str, label: str, group: str, reason: Json | None = None, **rest: Any) -> Json:
    return {
        "status": status,
        "status_label": label,
        "status_group": group,
        "failed_reason": reason,
        "delivery_confirmed": None,
        "attempts": 1,
        "next_attempt_at": None,
        "updated_at": _RECEIPTS_AT,
    } | rest


def _failed_with(code: str, label: str, definition: str, resendable: bool, error: str) -> Json:
    reason = _failed(code, label, definition, resendable, error)
    return _outcome("failed", "Failed", "failed", reason)


_OUTCOMES: list[Json] = [
    _outcome("delivered", "Delivered", "delivered", delivery_confirmed=True),
    _outcome(
        "scheduled",
        "Scheduled",
        "in_progress",
        _failed(
            "reattempting",
            "Re-attempting Delivery",
            "The message is queued and will be retried",
            None,
            "30001",
        ),
        next_attempt_at="2026-12-02T18:33:31.384315Z",
        updated_at=_REFUSED_AT,
    ),
    _failed_with(
        "unreachable_number",
        "Unreachable Number",
        "This number is switched off or otherwise unavailable",
        False,
        "30003",
    ),
    _failed_with(
        "blocked",
        "Blocked by Carrier/User",
        "This message was filtered or blocked by the carrier",
        True,
        "30007",
    ),
    _failed_with(
        "opted_out",
        "Opted out",
        "This number has opted out of a previous campaign.",
        False,
        "21610",
    )
    | {"updated_at": _REFUSED_AT},
]
RECIPIENTS: list[Json] = [
    {key: value for key, value in contact.items() if key != "created_at"} | outcome
    for contact, outcome in zip(CONTACTS, _OUTCOMES, strict=True)
]
RECIPIENT_DETAIL: Json = {
    **RECIPIENTS[2],
    "attempts_history": [
        {
            "provider": "simulator",
            "provider_message_id": "SMec1ed942162942a09fd57d9a31ac1d26",
            "status": "undelivered",
            "error_code": "30003",
            "created_at": "2026-12-02T18:32:31.317810Z",
            "updated_at": _RECEIPTS_AT,
        }
    ],
}
CONTACTS_CSV = "".join(
    line + "\r\n"
    for line in (
        "phone,first_name,last_name,status,status_label,failed_reason,failed_reason_label,"
        "failed_reason_definition,provider_error_code,attempts,updated_at,delivery_confirmed",
        "+12015550100,Ana,Diaz,delivered,Delivered,,,,,1,2026-12-02T18:32:33.542564+00:00,true",
        "+12015550101,Ben,Lee,scheduled,Scheduled,reattempting,Re-attempting Delivery,"
        "The message is queued and will be retried,30001,1,2026-12-02T18:32:31.384315+00:00,",
        "+12015550102,Cy,Ng,failed,Failed,unreachable_number,Unreachable Number,"
        "This number is switched off or otherwise unavailable,30003,1,"
        "2026-12-02T18:32:33.542564+00:00,",
        "+12015550104,Di,Oh,failed,Failed,blocked,Blocked by Carrier/User,"
        "This message was filtered or blocked by the carrier,30007,1,"
        "2026-12-02T18:32:33.542564+00:00,",
        "+12015550109,Ed,Po,failed,Failed,opted_out,Opted out,"
        "This number has opted out of a previous campaign.,21610,1,"
        "2026-12-02T18:32:31.384315+00:00,",
    )
)

CAMPAIGN: Json = {
    "id": CAMPAIGN_ID,
    "name": "Room change",
    "body": BODY,
    "contact_list_id": LIST_ID,
    "status": "active",
    "send_at": None,
    "launched_at": "2026-12-02T18:32:30.511806Z",
    "completed_at": None,
    "closed_at": None,
    "archived_at": None,
    "counts": {
        "total": 5,
        "queued": 0,
        "pending": 0,
        "scheduled": 1,
        "delivered": 1,
        "failed": 3,
    },
    "created_at": "2026-12-02T18:32:30.272317Z",
    "updated_at": "2026-12-02T18:32:33.560121Z",
}

OPT_OUT: Json = {
    "phone": "+12015550109",
    "source": "provider",
    "keyword": None,
    "campaign_id": CAMPAIGN_ID,
    "created_at": "2026-12-02T18:32:31.394043Z",
}

AUDIT_EVENT: Json = {
    "id": "5",
    "actor": "cmp_CQJOj8Mp",
    "action": "campaign.launch",
    "target_id": CAMPAIGN_ID,
    "details": None,
    "request_id": "568a1ada026e4772b1e107f631e18ed9",
    "created_at": "2026-12-02T18:32:30.533246Z",
}


def page(*items: Json) -> Json:
    """A list operation's answer: the items, and no further page."""
    return {"items": list(items), "next_cursor": None}


def config(*shown: Json) -> ConfigDict:
    """A model's configuration that shows these examples in the document (a page of the
    model's items shows them all: app.kit.pagination.Page)."""
    return ConfigDict(json_schema_extra={"examples": list(shown)})


def restore(document: Json) -> Json:
    """Put back the nulls of the models' examples (in place). FastAPI writes its document
    without a single null (jsonable_encoder(exclude_none=True)), examples included, so
    `"sending_window": null` (no window) would read as the default window and a contact's
    `"failed_reason": null` would be missing from a field that is always there."""
    schemas = document.get("components", {}).get("schemas", {})
    for model in _models(BaseModel):
        # A generic model's name, Page[Recipient], is Page_Recipient_ in the document.
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", model.__name__)
        if model.__module__.startswith("app.") and "examples" in schemas.get(name, {}):
            schemas[name]["examples"] = model.model_json_schema()["examples"]
    return document


def _models(model: type[BaseModel]) -> Iterator[type[BaseModel]]:
    for subclass in model.__subclasses__():
        yield subclass
        yield from _models(subclass)

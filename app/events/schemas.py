from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StrictBool

from app.kit.schemas import Id, RequestSchema, Schema

EventType = Literal["recipient.updated", "campaign.updated", "opt_out.created", "opt_out.deleted"]


def _some_and_distinct(types: list[EventType]) -> list[EventType]:
    if not types:
        raise ValueError(
            "an empty list would receive no event: send null for every type, or name at least one"
        )
    twice = sorted({t for t in types if types.count(t) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)} named twice: name each type once")
    return types


# What an endpoint may ask for: null (every type), or at least one type, each named once.
# The document says it (minItems, uniqueItems) and the validator checks it, saying why
# (pydantic's min_length would say only "at least 1 item"; pydantic has no uniqueItems).
EventTypes = Annotated[
    list[EventType],
    AfterValidator(_some_and_distinct),
    Field(json_schema_extra={"minItems": 1, "uniqueItems": True}),
]

_URL = Field(
    min_length=1,
    max_length=2000,
    description="Where events are posted: https, and a public address (README, Events)",
    examples=["https://sis.example.org/campanile/events"],
)
_EVENTS = Field(
    default=None,
    description="The event types posted here, at least one, each named once (an empty list, "
    "or a type named twice, is a 422); null for all",
    examples=[["recipient.updated", "campaign.updated"]],
)


class WebhookEndpointCreate(RequestSchema):
    url: str = _URL
    events: EventTypes | None = _EVENTS
    description: str | None = Field(default=None, max_length=500)


class WebhookEndpointUpdate(RequestSchema):
    url: str | None = Field(default=None, min_length=1, max_length=2000)
    events: EventTypes | None = _EVENTS
    description: str | None = Field(default=None, max_length=500)
    enabled: StrictBool | None = None  # 1 or "yes" is not a boolean


class WebhookEndpoint(Schema):
    id: Id
    url: str
    events: list[EventType] | None
    description: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime


class WebhookEndpointCreated(WebhookEndpoint):
    secret: str = Field(
        description="The signing secret (`whsec_...`), shown this once: verify each post's "
        "`webhook-signature` with it (Standard Webhooks)"
    )


class Delivery(Schema):
    id: Id
    event_id: str = Field(description="The event's id (`evt_...`): its `webhook-id` header")
    type: EventType
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None = Field(description="The last post's HTTP status, if it had one")
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


class StreamToken(Schema):
    token: str = Field(
        description="Put it in the stream's URL as `?token=` (a browser's EventSource cannot "
        "send headers); it opens this campaign's stream only, for an hour"
    )
    expires_at: datetime
    last_event_id: str | None = Field(
        description="The campaign's latest event on the stream now (null: none yet). Send it "
        "as `Last-Event-ID` to get only what happens from now on, not the campaign's history: "
        "a page that has just read the contacts asks for the token first, so that nothing "
        "between the two is missed"
    )

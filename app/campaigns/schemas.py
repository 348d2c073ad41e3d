from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.kit import examples
from app.kit.schemas import Id, RequestSchema, Schema, Timestamp
from app.models.campaign import CampaignStatus

Body = Field(
    min_length=1,
    max_length=1600,
    description="Message template; merge fields like {first_name}, {last_name} or any "
    "imported column name. `{{` and `}}` are literal braces.",
    examples=["Hi {first_name}, school is closed tomorrow."],
)


class CampaignCreate(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Room change",
                    "body": "Hi {first_name}, room {room} opens at 9.",
                    "contact_list_id": "0b7e6b9e-5a8e-4a53-9a43-3c1f2f3f4d5e",
                }
            ]
        }
    )

    name: str = Field(min_length=1, max_length=200)
    body: str = Body
    contact_list_id: str = Field(description="A contact list of the school.")
    send_at: Timestamp | None = Field(
        default=None, description="When to start sending; null or past: at launch."
    )


class CampaignUpdate(RequestSchema):
    """Drafts only. Omitted fields stay as they are."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    body: str | None = Field(default=None, min_length=1, max_length=1600)
    contact_list_id: str | None = None
    send_at: Timestamp | None = Field(default=None, description="null: at launch.")


class Counts(BaseModel):
    total: int = 0
    queued: int = 0
    pending: int = 0
    scheduled: int = 0
    delivered: int = 0
    failed: int = 0


class Campaign(Schema):
    model_config = examples.config(examples.CAMPAIGN)

    id: Id
    name: str
    body: str
    contact_list_id: Id
    status: CampaignStatus
    send_at: datetime | None
    launched_at: datetime | None
    completed_at: datetime | None
    closed_at: datetime | None
    archived_at: datetime | None
    counts: Counts
    created_at: datetime
    updated_at: datetime


class PreviewContact(RequestSchema):
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    fields: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict, description="Merge fields, as a contact's."
    )


class PreviewRequest(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "body": "Hi {first_name}, room {room} opens at 9.",
                    "contact": {"first_name": "Ana", "fields": {"room": "12"}},
                }
            ]
        }
    )

    body: str = Body
    contact: PreviewContact = Field(default_factory=PreviewContact)


class Preview(Schema):
    """A rendered message as the carrier will see it (read from `message.Measure`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "text": "Hi Ana, room 12 opens at 9.",
                    "encoding": "GSM-7",
                    "characters": 27,
                    "segments": 1,
                }
            ]
        }
    )

    text: str
    encoding: Literal["GSM-7", "UCS-2"]
    characters: int = Field(
        description="GSM-7 septets (extension characters count 2) or UTF-16 code units"
    )
    segments: int = Field(description="SMS parts the message is sent in (0 for an empty text)")

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field

from app.kit.schemas import Id, RequestSchema, Schema
from app.models.campaign import CampaignStatus

Body = Field(
    min_length=1,
    max_length=1600,
    description="Message template; merge fields like {first_name}, {last_name} or any "
    "imported column name. `{{` and `}}` are literal braces.",
    examples=["Hi {first_name}, school is closed tomorrow."],
)


class CampaignCreate(RequestSchema):
    name: str = Field(min_length=1, max_length=200)
    body: str = Body
    contact_list_id: str
    send_at: AwareDatetime | None = Field(
        default=None, description="When to start sending; null or past: at launch."
    )


class CampaignUpdate(RequestSchema):
    """Drafts only. Omitted fields stay as they are."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    body: str | None = Field(default=None, min_length=1, max_length=1600)
    contact_list_id: str | None = None
    send_at: AwareDatetime | None = None


class Counts(BaseModel):
    total: int = 0
    queued: int = 0
    pending: int = 0
    scheduled: int = 0
    delivered: int = 0
    failed: int = 0


class Campaign(Schema):
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
    fields: dict[str, Any] = Field(default_factory=dict)


class PreviewRequest(RequestSchema):
    body: str = Body
    contact: PreviewContact = Field(default_factory=PreviewContact)


class Preview(Schema):
    """A rendered message as the carrier will see it (read from `message.Measure`)."""

    text: str
    encoding: Literal["GSM-7", "UCS-2"]
    characters: int = Field(
        description="GSM-7 septets (extension characters count 2) or UTF-16 code units"
    )
    segments: int = Field(description="SMS parts the message is sent in (0 for an empty text)")

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from app.kit import examples
from app.kit.schemas import Id, Schema
from app.models import AuditAction


class AuditEvent(Schema):
    model_config = examples.config(examples.AUDIT_EVENT)

    id: Id
    actor: str = Field(
        description='The prefix of the API key that made the change, or "admin" (ADMIN_TOKEN).'
    )
    action: AuditAction
    target_id: Id = Field(
        description="What changed: a campaign, recipient, contact list, API key or school id; "
        "an opt-out's phone number."
    )
    details: dict[str, Any] | None = Field(
        description="A few facts beside the target (a clone's source, a resend's count)."
    )
    request_id: str = Field(description="The request's `X-Request-ID`.")
    created_at: datetime

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from app.kit.schemas import Id
from app.sending import reasons
from app.sending.status import Group, Status


class FailedReason(BaseModel):
    code: str
    label: str
    definition: str
    resendable: bool | None
    provider_error_code: str | None


class Recipient(BaseModel):
    id: Id
    phone: str
    first_name: str | None
    last_name: str | None
    fields: dict[str, Any]
    status: Status
    status_label: str
    status_group: Group
    failed_reason: FailedReason | None
    attempts: int
    next_attempt_at: datetime | None
    updated_at: datetime


class AttemptOut(BaseModel):
    provider: str
    provider_message_id: str | None
    status: str
    error_code: str | None
    created_at: datetime
    updated_at: datetime


class RecipientDetail(Recipient):
    attempts_history: list[AttemptOut]


class BulkResendReport(BaseModel):
    queued: int
    skipped: dict[str, int]


FailedReasonCode = enum.StrEnum(  # type: ignore[misc]
    "FailedReasonCode", {code: code for code in reasons.CODES}
)

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.kit import examples
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
    model_config = examples.config(*examples.RECIPIENTS)

    id: Id
    phone: str
    first_name: str | None
    last_name: str | None
    fields: dict[str, Any]
    status: Status
    status_label: str
    status_group: Group
    failed_reason: FailedReason | None
    delivery_confirmed: bool | None = Field(
        description=(
            "Only for a `delivered` recipient: `true` when the carrier confirmed the delivery; "
            "`false` when the message is taken as delivered without a confirmation (the "
            "carrier accepted it but never sent a final delivery receipt, or the provider "
            "reported the delivery as unconfirmed), so it most likely arrived and is not "
            "worth resending. `null` in every other status. A confirmation that comes "
            "later turns `false` into `true`; it never goes back."
        )
    )
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
    model_config = examples.config(examples.RECIPIENT_DETAIL)

    attempts_history: list[AttemptOut]


class BulkResendReport(BaseModel):
    queued: int
    skipped: dict[str, int]


FailedReasonCode = enum.StrEnum(  # type: ignore[misc]
    "FailedReasonCode", {code: code for code in reasons.CODES}
)

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base, utc_now


class AuditAction(enum.StrEnum):
    """What a person changed through the API (README, Audit trail)."""

    school_create = "school.create"
    school_update = "school.update"
    provider_account_set = "provider_account.set"
    api_key_create = "api_key.create"
    api_key_revoke = "api_key.revoke"
    contact_list_create = "contact_list.create"
    contact_list_import = "contact_list.import"
    contact_list_delete = "contact_list.delete"
    campaign_create = "campaign.create"
    campaign_update = "campaign.update"
    campaign_delete = "campaign.delete"
    campaign_launch = "campaign.launch"
    campaign_close = "campaign.close"
    campaign_archive = "campaign.archive"
    campaign_clone = "campaign.clone"
    campaign_resend_failed = "campaign.resend_failed"
    recipient_resend = "recipient.resend"
    opt_out_create = "opt_out.create"
    opt_out_delete = "opt_out.delete"
    webhook_endpoint_create = "webhook_endpoint.create"
    webhook_endpoint_update = "webhook_endpoint.update"
    webhook_endpoint_delete = "webhook_endpoint.delete"


# The actor of a change made with the ADMIN_TOKEN rather than one of the school's keys.
ADMIN_ACTOR = "admin"


class AuditEvent(Base):
    """One change a person made through the API, written in the change's own transaction."""

    __tablename__ = "audit_events"
    __table_args__ = (
        # The list (newest first, per school) and the retention sweep (oldest first).
        Index(None, "school_id", "id"),
        Index(None, "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    school_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"))
    # The prefix of the API key that made the change, or ADMIN_ACTOR.
    actor: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    request_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

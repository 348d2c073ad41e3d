from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base, TimestampMixin, str_enum


class CampaignStatus(enum.StrEnum):
    draft = "draft"
    scheduled = "scheduled"
    active = "active"
    complete = "complete"
    closed = "closed"
    archived = "archived"


class Campaign(TimestampMixin, Base):
    __tablename__ = "campaigns"
    __table_args__ = (Index(None, "school_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    school_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    # RESTRICT: a list used by a campaign cannot be deleted from under it.
    contact_list_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("contact_lists.id", ondelete="RESTRICT"), index=True
    )
    status: Mapped[CampaignStatus] = mapped_column(
        str_enum(CampaignStatus),
        default=CampaignStatus.draft,
        server_default=CampaignStatus.draft.value,
    )
    send_at: Mapped[datetime | None]
    launched_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    archived_at: Mapped[datetime | None]

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base, str_enum


class OptOutSource(enum.StrEnum):
    keyword = "keyword"
    staff = "staff"
    provider = "provider"


class OptOut(Base):
    """(school, phone): the number gets nothing from the school until it opts back in."""

    __tablename__ = "opt_outs"

    school_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("schools.id", ondelete="CASCADE"), primary_key=True
    )
    phone: Mapped[str] = mapped_column(String(20), primary_key=True)
    source: Mapped[OptOutSource] = mapped_column(str_enum(OptOutSource))
    keyword: Mapped[str | None] = mapped_column(String(64))
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

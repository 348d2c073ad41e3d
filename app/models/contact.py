from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, String, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base


class Contact(Base):
    """One row of a contact list; `phone` is E.164 and unique within the list."""

    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("contact_list_id", "phone"),
        Index(None, "contact_list_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    contact_list_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("contact_lists.id", ondelete="CASCADE")
    )
    phone: Mapped[str] = mapped_column(String(20))
    # The number's country calling code (1 for +1...), judged against allowed_country_codes.
    country_code: Mapped[int]
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    fields: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

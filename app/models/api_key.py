from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base, TimestampMixin


class ApiKey(TimestampMixin, Base):
    """A school's bearer token, kept only as its SHA-256."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    school_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("schools.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # First characters of the token, so staff can tell keys apart.
    prefix: Mapped[str] = mapped_column(String(16))

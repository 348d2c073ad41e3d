from __future__ import annotations

import uuid
from datetime import datetime

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
    # First characters of the token, so staff can tell keys apart (and the audit trail
    # names the key that made a change).
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100))
    # The minute of the key's latest use, written at most once a minute (README, API keys).
    last_used_at: Mapped[datetime | None]
    # Set once: a revoked key is refused from then on and never comes back.
    revoked_at: Mapped[datetime | None]

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base, TimestampMixin


class ProviderAccount(TimestampMixin, Base):
    """A school's SMS provider account. Secrets live only in `credentials` (encrypted)."""

    __tablename__ = "provider_accounts"
    __table_args__ = (Index(None, "provider", "account_sid"),)

    school_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("schools.id", ondelete="CASCADE"), primary_key=True
    )
    provider: Mapped[str] = mapped_column(String(16))
    # Twilio AccountSid; webhooks name it, so it is looked up in clear.
    account_sid: Mapped[str | None] = mapped_column(String(64))
    from_number: Mapped[str | None] = mapped_column(String(32))
    messaging_service_sid: Mapped[str | None] = mapped_column(String(64))
    messaging_profile_id: Mapped[str | None] = mapped_column(String(64))
    api_base: Mapped[str | None] = mapped_column(String(300))
    max_messages_per_second: Mapped[float | None]
    # The next free send slot under max_messages_per_second, shared by every worker process.
    next_send_at: Mapped[datetime | None]
    # The last turn promised to a recipient waiting for a slot (its `next_attempt_at`):
    # the next one waiting is promised a later turn, so waiting recipients come due one
    # slot apart instead of all together.
    deferred_until: Mapped[datetime | None]
    # Telnyx webhook public key: not a secret.
    public_key: Mapped[str | None] = mapped_column(Text)
    # Fernet token of {"auth_token": ...} or {"api_key": ...}.
    credentials: Mapped[str | None] = mapped_column(Text)

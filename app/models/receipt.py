from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, String, UniqueConstraint, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base


class StoredReceipt(Base):
    """A delivery receipt as it arrived, kept once per provider event.

    `applied_at` is null until the receipt applier has applied it: moments after it
    arrived, or, when it came before the send transaction stored the provider message id,
    the moment after that transaction commits.
    """

    __tablename__ = "receipts"
    __table_args__ = (
        UniqueConstraint("provider", "event_id"),
        # The applier's queue: receipts not applied yet, oldest first.
        Index("ix_receipts_unapplied", "id", postgresql_where=text("applied_at IS NULL")),
        # The receipts waiting for an attempt they name: what a recovery looks for first.
        Index(
            "ix_receipts_naming",
            "named_attempt_id",
            postgresql_where=text("applied_at IS NULL AND named_attempt_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(128))
    provider_message_id: Mapped[str] = mapped_column(String(64))
    provider_status: Mapped[str] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(16))
    # The error code's meaning at the time it arrived (code tables may change later).
    reason: Mapped[str | None] = mapped_column(String(32))
    soft: Mapped[bool | None]
    definition: Mapped[int | None]
    occurred_at: Mapped[datetime | None]
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())
    applied_at: Mapped[datetime | None]
    # The attempt its callback URL named (`app.providers.callbacks`), if it named one: the
    # receipt applies to it when no attempt holds its message id, and teaches it the id
    # (the create call's answer, and the id with it, may have been lost). Not a foreign
    # key: the attempt may not be recorded yet.
    named_attempt_id: Mapped[int | None] = mapped_column(BigInteger)
    # The attempt it was applied to.
    attempt_id: Mapped[int | None] = mapped_column(
        ForeignKey("attempts.id", ondelete="SET NULL"), index=True
    )

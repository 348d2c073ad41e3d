from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Identity,
    Index,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base

# Our own attempt status: handed over, but the answer was lost (timeout, 5xx).
UNKNOWN = "unknown"
# Attempts whose outcome is not known: recovered before anything is sent again. (`sending`:
# a hand-over in flight as workers before migration b41f0c9d2e57 recorded it.)
UNRESOLVED = (UNKNOWN, "sending")

# The provider statuses of a message not final yet: in the provider's queue (queued,
# accepted, scheduled, sending) or handed to the carrier (sent). The status rules'
# `PROVIDER_PHASES` of phases `queued` and `sent` (a test checks that they agree).
UNSETTLED_STATUSES = ("accepted", "queued", "scheduled", "sending", "sent")
# What the reconciliation (`app.delivery.reconcile`, README) may still look up: an
# attempt at its provider, its message id known, its final receipt not come, and the
# reconciliation not done with it. `ix_attempts_unconfirmed` holds those alone, by
# `checked_at`: the due ones are one range of it, whatever the size of the table.
UNCONFIRMED = (
    "checked_at IS NOT NULL AND provider_message_id IS NOT NULL AND status IN ("
    + ", ".join(f"'{s}'" for s in UNSETTLED_STATUSES)
    + ")"
)


class Attempt(Base):
    """One hand-over of a recipient's message to a provider."""

    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("provider", "provider_message_id"),
        Index("ix_attempts_unconfirmed", "checked_at", postgresql_where=text(UNCONFIRMED)),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    recipient_id: Mapped[int] = mapped_column(
        ForeignKey("recipients.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(String(16))
    provider_message_id: Mapped[str | None] = mapped_column(String(64))
    # The provider's own word for the message (queued, sent, delivered, undelivered...).
    status: Mapped[str] = mapped_column(String(24))
    error_code: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # When the reconciliation last asked the provider about this message (README); until
    # it first does, when the attempt was recorded (the column's default). It is due again
    # RECONCILE_AFTER_SECONDS after that while its status is not final (`UNCONFIRMED`).
    # Null once the reconciliation is done with it: settled as delivered unconfirmed, or
    # its recipient no longer waits on it (a later attempt, a final status, archived).
    checked_at: Mapped[datetime | None] = mapped_column(server_default=func.now())

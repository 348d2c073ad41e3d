from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base


class Recipient(Base):
    """One contact of a launched campaign: a snapshot plus its delivery status.

    `next_attempt_at` is set exactly while an attempt is due (status queued or
    scheduled); the partial index on it is the delivery queue. While a worker hands the
    message over, it holds the lease (see app.delivery.engine), and `claimed_at` says
    when that hand-over began: its attempt row is written once the provider answers.
    """

    __tablename__ = "recipients"
    __table_args__ = (
        Index(None, "campaign_id", "id"),
        Index(None, "campaign_id", "status", "id"),
        Index(None, "school_id", "phone"),
        Index(
            "ix_recipients_due",
            "next_attempt_at",
            postgresql_where=text("next_attempt_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    school_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("schools.id", ondelete="CASCADE"))
    phone: Mapped[str] = mapped_column(String(20))
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    fields: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    status: Mapped[str] = mapped_column(String(16))
    failed_reason: Mapped[str | None] = mapped_column(String(32))
    # Which of the reason's definitions fits the provider error (0 or 1).
    failed_definition: Mapped[int] = mapped_column(server_default="0")
    provider_error_code: Mapped[str | None] = mapped_column(String(16))
    # Delivered only: whether the carrier confirmed the delivery (README, Webhooks); null in any
    # other status. Written with the status, from the status rules' state.
    delivery_confirmed: Mapped[bool | None]
    attempts: Mapped[int] = mapped_column(server_default="0")
    next_attempt_at: Mapped[datetime | None]
    first_attempt_at: Mapped[datetime | None]
    # Set while a hand-over is in flight and not yet recorded as an attempt: a lease that
    # runs out with it set was perhaps sent, so the provider is asked before sending again.
    claimed_at: Mapped[datetime | None]
    # The id of that hand-over's attempt, named in its status callback URL before the row
    # exists (`app.providers.callbacks`): a receipt naming it tells a recovery that the
    # message went out. Meaningful only while `claimed_at` is set.
    claimed_attempt_id: Mapped[int | None] = mapped_column(BigInteger)
    # The claim holding that hand-over now (one value per claim): a record applies to the
    # recipient only while it is still its claim's, not after another took it over.
    claimed_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())

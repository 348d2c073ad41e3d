from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, String, Text, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base, TimestampMixin


class WebhookEndpoint(TimestampMixin, Base):
    """Where a school's events are posted (README, Events). The signing secret is kept
    sealed with SECRET_KEY, as provider credentials are."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    school_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("schools.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    # The event types posted here; null: every type.
    events: Mapped[list[str] | None] = mapped_column(ARRAY(String(32)))
    description: Mapped[str | None] = mapped_column(String(500))
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))
    secret: Mapped[str] = mapped_column(Text)
    # How far the deliverer has taken the school's events to post here, in the outbox's
    # order (`app.events.outbox`): from those of the transactions that began writing after
    # the one that made it (or enabled it again).
    cursor_xid: Mapped[int] = mapped_column(
        BigInteger, server_default=text("pg_current_xact_id()::text::bigint")
    )
    cursor_id: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class WebhookDelivery(Base):
    """One event to post to one endpoint, until it is answered 2xx or its retries end.
    `next_attempt_at` is set exactly while a post is due (a lease while one is in flight):
    the partial index on it, per endpoint, is each endpoint's queue.

    No foreign keys: one is written per event per endpoint, and their checks (a row lock
    on the event and on the endpoint for each) doubled the cost of writing them. The
    pruner deletes an event's deliveries with it (`app.events.outbox.prune`), and deleting
    an endpoint deletes its deliveries (`app.events.service.delete`)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index(
            "ix_webhook_deliveries_due",
            "endpoint_id",
            "next_attempt_at",
            postgresql_where=text("next_attempt_at IS NOT NULL"),
        ),
        Index(None, "endpoint_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    endpoint_id: Mapped[uuid.UUID]
    event_id: Mapped[int] = mapped_column(BigInteger, index=True)
    # pending (posting, or retrying), delivered, failed (its retries ran out).
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(server_default="0")
    next_attempt_at: Mapped[datetime | None]
    # The last post's HTTP status, or why it had none (timeout, refused address...).
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    updated_at: Mapped[datetime] = mapped_column(server_default=text("now()"))

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Identity, Index, String, Uuid, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base


class Event(Base):
    """One change a school's systems may subscribe to (README, Events): the outbox.

    Written only by the database's triggers (migration a7d2e9c4b318), in the transaction of
    the change itself: a `recipient.updated` when a recipient's visible status, failed
    reason or `delivery_confirmed` changes, a `campaign.updated` when a campaign's status
    does, `opt_out.created` / `opt_out.deleted`. `snapshot` is the resource's columns as the
    change left them; `app.events.render` shows it as the REST API shows the resource.
    `id` grows with every event, so with each event of one resource (whose writers take
    its row lock in turn): it is the event's `sequence`. `position` is its place in the
    order readers follow, given once it has committed (`app.events.outbox`).
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_position", "position", unique=True),
        Index("ix_events_stream", "campaign_id", "position"),
        Index("ix_events_unsequenced", "id", postgresql_where=text("position IS NULL")),
        Index("ix_events_occurred_at", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    public_id: Mapped[str] = mapped_column(
        String(36),
        unique=True,
        server_default=text("'evt_' || replace(gen_random_uuid()::text, '-', '')"),
    )
    position: Mapped[int | None] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(32))
    school_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    resource_id: Mapped[str] = mapped_column(String(64))
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSONB)
    occurred_at: Mapped[datetime] = mapped_column(server_default=text("clock_timestamp()"))

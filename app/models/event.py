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
    its row lock in turn): it is the event's `sequence`. `xid` is the transaction that
    wrote it; readers follow (xid, id), reading only the events of transactions that have
    ended (`app.events.outbox`).
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_school", "school_id", "xid", "id"),
        Index("ix_events_stream", "campaign_id", "xid", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # Random, 122 bits: unique without an index to keep it so.
    public_id: Mapped[str] = mapped_column(
        String(36), server_default=text("'evt_' || replace(gen_random_uuid()::text, '-', '')")
    )
    xid: Mapped[int] = mapped_column(
        BigInteger, server_default=text("pg_current_xact_id()::text::bigint")
    )
    type: Mapped[str] = mapped_column(String(32))
    school_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    resource_id: Mapped[str] = mapped_column(String(64))
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSONB)
    occurred_at: Mapped[datetime] = mapped_column(server_default=text("clock_timestamp()"))

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
    does, `opt_out.created` / `opt_out.deleted`. The resource's columns as the change left
    them are kept (a recipient's as columns, the others' in `snapshot`, migration
    b5d9e2a7c341); `app.events.render` shows them as the REST API shows the resource.
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
    # Given by older revisions (random, 122 bits); null since: `app.events.render.public_id`.
    public_id: Mapped[str | None] = mapped_column(String(36))
    xid: Mapped[int] = mapped_column(
        BigInteger, server_default=text("pg_current_xact_id()::text::bigint")
    )
    type: Mapped[str] = mapped_column(String(32))
    school_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    resource_id: Mapped[str] = mapped_column(String(64))
    # A campaign's or an opt-out's columns as the change left them.
    snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    occurred_at: Mapped[datetime] = mapped_column(server_default=text("clock_timestamp()"))
    # A recipient's, for a `recipient.updated` (copied as they are: no JSON to build).
    phone: Mapped[str | None] = mapped_column(String(20))
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    fields: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    status: Mapped[str | None] = mapped_column(String(16))
    failed_reason: Mapped[str | None] = mapped_column(String(32))
    failed_definition: Mapped[int | None]
    provider_error_code: Mapped[str | None] = mapped_column(String(16))
    delivery_confirmed: Mapped[bool | None]
    attempts: Mapped[int | None]
    next_attempt_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]

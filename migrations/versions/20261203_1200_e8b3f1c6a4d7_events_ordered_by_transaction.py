"""events ordered by their transaction, fanned out by the deliverer

Readers followed `position`, given to events after they committed by a sequencer that
rewrote every event row and, in the same statement, wrote a delivery row for each webhook
endpoint: work proportional to the events, done while the changes that caused them were
still being made. Now:

- each event keeps the id of the transaction that wrote it (`xid`, from
  `pg_current_xact_id()`: 64 bits, never wraps), and readers follow (xid, id). A transaction
  started before another may commit after it, so a reader reads only the events of
  transactions older than the oldest still running (`pg_snapshot_xmin` of its snapshot): all
  of them have ended, so no event can appear later before what was read. Nothing is
  rewritten after the insert;
- each webhook endpoint keeps how far it has taken the school's events (`cursor_xid`,
  `cursor_id`), and the deliverer makes the delivery rows as it claims them
  (`app.events.deliveries`): an endpoint starts at the events of the transactions that
  began writing after the one that made it (or enabled it again);
- deliveries have no foreign keys (their checks, a row lock on the event and on the
  endpoint for each delivery written, doubled the fan-out's cost): the pruner deletes an
  event's deliveries with it, and deleting an endpoint deletes its deliveries;
- `public_id` keeps its random default but no unique index (122 random bits), nor does
  `occurred_at` have one: events are pruned oldest id first;
- the triggers' notification (`campanile_events`, at commit) wakes the streams.

Revision ID: e8b3f1c6a4d7
Revises: c4e1f7a2d905
Create Date: 2026-12-03 12:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "e8b3f1c6a4d7"
down_revision: str | None = "c4e1f7a2d905"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

XID = "pg_current_xact_id()::text::bigint"


def upgrade() -> None:
    # What the sequencer had not yet fanned out, as it would have.
    op.execute(
        """
        INSERT INTO webhook_deliveries (endpoint_id, event_id, next_attempt_at)
        SELECT w.id, e.id, now()
        FROM events AS e
        JOIN webhook_endpoints AS w
          ON w.school_id = e.school_id AND w.enabled
         AND (w.events IS NULL OR e.type = ANY (w.events))
        WHERE e.position IS NULL
        """
    )
    op.drop_constraint(
        "fk_webhook_deliveries_event_id_events", "webhook_deliveries", type_="foreignkey"
    )
    op.drop_constraint(
        "fk_webhook_deliveries_endpoint_id_webhook_endpoints",
        "webhook_deliveries",
        type_="foreignkey",
    )
    op.drop_index("ix_events_position", table_name="events")
    op.drop_index("ix_events_stream", table_name="events")
    op.drop_index("ix_events_unsequenced", table_name="events")
    op.drop_index("ix_events_occurred_at", table_name="events")
    op.drop_constraint("uq_events_public_id", "events", type_="unique")
    op.drop_column("events", "position")
    op.add_column(
        "events", sa.Column("xid", sa.BigInteger(), server_default=sa.text(XID), nullable=False)
    )
    op.create_index("ix_events_school", "events", ["school_id", "xid", "id"], unique=False)
    op.create_index("ix_events_stream", "events", ["campaign_id", "xid", "id"], unique=False)
    op.add_column(
        "webhook_endpoints",
        sa.Column("cursor_xid", sa.BigInteger(), server_default=sa.text(XID), nullable=False),
    )
    op.add_column(
        "webhook_endpoints",
        sa.Column("cursor_id", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    # The events kept so far all have this transaction's id: the endpoints have them all.
    op.execute(
        f"UPDATE webhook_endpoints SET cursor_xid = {XID}, "
        "cursor_id = (SELECT coalesce(max(id), 0) FROM events)"
    )


def downgrade() -> None:
    op.drop_column("webhook_endpoints", "cursor_id")
    op.drop_column("webhook_endpoints", "cursor_xid")
    op.drop_index("ix_events_stream", table_name="events")
    op.drop_index("ix_events_school", table_name="events")
    op.drop_column("events", "xid")
    op.add_column("events", sa.Column("position", sa.BigInteger(), nullable=True))
    op.execute("UPDATE events SET position = id")
    op.create_unique_constraint("uq_events_public_id", "events", ["public_id"])
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"], unique=False)
    op.create_index(
        "ix_events_unsequenced",
        "events",
        ["id"],
        unique=False,
        postgresql_where=sa.text("position IS NULL"),
    )
    op.create_index("ix_events_stream", "events", ["campaign_id", "position"], unique=False)
    op.create_index("ix_events_position", "events", ["position"], unique=True)
    op.create_foreign_key(
        "fk_webhook_deliveries_endpoint_id_webhook_endpoints",
        "webhook_deliveries",
        "webhook_endpoints",
        ["endpoint_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_foreign_key(
        "fk_webhook_deliveries_event_id_events",
        "webhook_deliveries",
        "events",
        ["event_id"],
        ["id"],
        ondelete="CASCADE",
    )

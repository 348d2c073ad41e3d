"""recipient events keep the recipient's columns as columns, and no random id

Each `recipient.updated` event kept a jsonb snapshot built with jsonb_build_object (every
timestamp and number turned into JSON) and a random `public_id` (gen_random_uuid): the
two costliest parts of writing an event, which every receipt that changes a recipient
pays. Now the event keeps the recipient's columns as columns of its own (copied, not
converted; `snapshot` stays for the rarer campaign and opt-out events), and an event
without a stored `public_id` is shown with one made of its id (`evt_` and the id in 32 hex
digits, `app.events.render.public_id`); the ids already given stay as they were.

Revision ID: b5d9e2a7c341
Revises: e8b3f1c6a4d7
Create Date: 2026-12-03 13:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "b5d9e2a7c341"
down_revision: str | None = "e8b3f1c6a4d7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (name, type) of the recipient's columns an event keeps, as the recipients table has them.
COLUMNS = [
    ("phone", sa.String(length=20)),
    ("first_name", sa.String(length=200)),
    ("last_name", sa.String(length=200)),
    ("fields", postgresql.JSONB(astext_type=sa.Text())),
    ("status", sa.String(length=16)),
    ("failed_reason", sa.String(length=32)),
    ("failed_definition", sa.Integer()),
    ("provider_error_code", sa.String(length=16)),
    ("delivery_confirmed", sa.Boolean()),
    ("attempts", sa.Integer()),
    ("next_attempt_at", sa.DateTime(timezone=True)),
    ("updated_at", sa.DateTime(timezone=True)),
]
NAMES = ", ".join(name for name, _ in COLUMNS)
CHANGED = """(n.status, n.failed_reason, n.failed_definition, n.provider_error_code,
           n.delivery_confirmed)
          IS DISTINCT FROM
          (o.status, o.failed_reason, o.failed_definition, o.provider_error_code,
           o.delivery_confirmed)"""

SNAPSHOT = """jsonb_build_object(
        'id', n.id, 'campaign_id', n.campaign_id, 'phone', n.phone,
        'first_name', n.first_name, 'last_name', n.last_name, 'fields', n.fields,
        'status', n.status, 'failed_reason', n.failed_reason,
        'failed_definition', n.failed_definition, 'provider_error_code', n.provider_error_code,
        'delivery_confirmed', n.delivery_confirmed, 'attempts', n.attempts,
        'next_attempt_at', n.next_attempt_at, 'updated_at', n.updated_at)"""


def recipients_events(columns: str, values: str) -> str:
    """The recipients' trigger function, writing the recipient into these event columns."""
    return f"""
CREATE OR REPLACE FUNCTION recipients_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    written bigint;
BEGIN
    INSERT INTO events (type, school_id, campaign_id, resource_id, {columns})
    SELECT 'recipient.updated', n.school_id, n.campaign_id, n.id::text, {values}
    FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
    WHERE {CHANGED}
    ORDER BY n.id;
    GET DIAGNOSTICS written = ROW_COUNT;
    IF written > 0 THEN
        PERFORM pg_notify('campanile_events', '');
    END IF;
    RETURN NULL;
END
$$"""


TYPED = recipients_events(NAMES, ", ".join(f"n.{name}" for name, _ in COLUMNS))
# As migration a7d2e9c4b318 wrote it.
JSON = recipients_events("snapshot", SNAPSHOT)


def upgrade() -> None:
    for name, type_ in COLUMNS:
        op.add_column("events", sa.Column(name, type_, nullable=True))
    op.alter_column("events", "snapshot", nullable=True)
    op.alter_column("events", "public_id", nullable=True, server_default=None)
    op.execute(TYPED)


def downgrade() -> None:
    op.execute(JSON)
    op.execute(
        f"UPDATE events AS n SET snapshot = {SNAPSHOT.replace('n.id', 'n.resource_id::bigint')} "
        "WHERE snapshot IS NULL"
    )
    op.execute(
        "UPDATE events SET public_id = 'evt_' || lpad(to_hex(id), 32, '0') WHERE public_id IS NULL"
    )
    op.alter_column(
        "events",
        "public_id",
        nullable=False,
        server_default=sa.text("'evt_' || replace(gen_random_uuid()::text, '-', '')"),
    )
    op.alter_column("events", "snapshot", nullable=False)
    for name, _ in reversed(COLUMNS):
        op.drop_column("events", name)

"""events: the outbox, written by triggers in the transaction of each change

Every change a school's systems may subscribe to (README, Events) leaves an event row in
the same transaction as the change, written by the database itself, so no writer can
change a recipient, a campaign's status or an opt-out without its event, and a rolled-back
change leaves none:

- `recipients_events`: a statement-level AFTER UPDATE trigger with transition tables: one
  INSERT ... SELECT per statement (the worker writes hundreds of recipients a statement),
  a `recipient.updated` for each row whose visible status, failed reason or
  `delivery_confirmed` changed, with a snapshot of the recipient as it now stands;
- `campaigns_events`: AFTER UPDATE OF a campaign's status, a `campaign.updated` with the
  campaign and its counts at that moment;
- `opt_outs_events`: AFTER INSERT / DELETE, `opt_out.created` / `opt_out.deleted`.

Events are numbered as they are written (`id`), not as they commit, so readers follow
`position` instead, given to committed events in the order they are found (one sequencer at
a time: `app.events.outbox.sequence`): an event that commits later gets a later position,
and no reader passes it. `ix_events_unsequenced` is the sequencer's queue. Each statement
that writes events notifies `campanile_events` (delivered at commit, once per transaction)
to wake the sequencer.

Revision ID: a7d2e9c4b318
Revises: a7d2c94e1b08
Create Date: 2026-12-03 10:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql


revision: str = 'a7d2e9c4b318'
down_revision: str | None = 'a7d2c94e1b08'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The recipient's columns an event's snapshot keeps: those the API shows
# (`app.recipients.service.view`), and its campaign.
RECIPIENT_SNAPSHOT = """jsonb_build_object(
        'id', n.id, 'campaign_id', n.campaign_id, 'phone', n.phone,
        'first_name', n.first_name, 'last_name', n.last_name, 'fields', n.fields,
        'status', n.status, 'failed_reason', n.failed_reason,
        'failed_definition', n.failed_definition, 'provider_error_code', n.provider_error_code,
        'delivery_confirmed', n.delivery_confirmed, 'attempts', n.attempts,
        'next_attempt_at', n.next_attempt_at, 'updated_at', n.updated_at)"""

STATEMENTS = [
    f"""
CREATE FUNCTION recipients_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    written bigint;
BEGIN
    INSERT INTO events (type, school_id, campaign_id, resource_id, snapshot)
    SELECT 'recipient.updated', n.school_id, n.campaign_id, n.id::text, {RECIPIENT_SNAPSHOT}
    FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
    WHERE (n.status, n.failed_reason, n.failed_definition, n.provider_error_code,
           n.delivery_confirmed)
          IS DISTINCT FROM
          (o.status, o.failed_reason, o.failed_definition, o.provider_error_code,
           o.delivery_confirmed)
    ORDER BY n.id;
    GET DIAGNOSTICS written = ROW_COUNT;
    IF written > 0 THEN
        PERFORM pg_notify('campanile_events', '');
    END IF;
    RETURN NULL;
END
$$""",
    """
CREATE FUNCTION campaigns_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (type, school_id, campaign_id, resource_id, snapshot)
    VALUES ('campaign.updated', NEW.school_id, NEW.id, NEW.id::text,
            to_jsonb(NEW) || jsonb_build_object('counts', (
                SELECT coalesce(jsonb_object_agg(status, n), '{}'::jsonb)
                FROM (SELECT status, count(*) AS n FROM recipients
                      WHERE campaign_id = NEW.id GROUP BY status) AS c)));
    PERFORM pg_notify('campanile_events', '');
    RETURN NULL;
END
$$""",
    """
CREATE FUNCTION opt_outs_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row opt_outs;
BEGIN
    IF TG_OP = 'DELETE' THEN
        row := OLD;
    ELSE
        row := NEW;
    END IF;
    INSERT INTO events (type, school_id, campaign_id, resource_id, snapshot)
    VALUES (CASE TG_OP WHEN 'DELETE' THEN 'opt_out.deleted' ELSE 'opt_out.created' END,
            row.school_id, NULL, row.phone, to_jsonb(row));
    PERFORM pg_notify('campanile_events', '');
    RETURN NULL;
END
$$""",
    """
CREATE TRIGGER recipients_events AFTER UPDATE ON recipients
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recipients_events()""",
    """
CREATE TRIGGER campaigns_events AFTER UPDATE OF status ON campaigns
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION campaigns_events()""",
    """
CREATE TRIGGER opt_outs_events AFTER INSERT OR DELETE ON opt_outs
    FOR EACH ROW EXECUTE FUNCTION opt_outs_events()""",
]


def upgrade() -> None:
    op.create_table(
        'events',
        sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            'public_id',
            sa.String(length=36),
            server_default=sa.text("'evt_' || replace(gen_random_uuid()::text, '-', '')"),
            nullable=False,
        ),
        sa.Column('position', sa.BigInteger(), nullable=True),
        sa.Column('type', sa.String(length=32), nullable=False),
        sa.Column('school_id', sa.Uuid(), nullable=False),
        sa.Column('campaign_id', sa.Uuid(), nullable=True),
        sa.Column('resource_id', sa.String(length=64), nullable=False),
        sa.Column('snapshot', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            'occurred_at',
            sa.DateTime(timezone=True),
            server_default=sa.text('clock_timestamp()'),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('public_id'),
    )
    op.create_index('ix_events_position', 'events', ['position'], unique=True)
    op.create_index('ix_events_stream', 'events', ['campaign_id', 'position'], unique=False)
    op.create_index(
        'ix_events_unsequenced',
        'events',
        ['id'],
        unique=False,
        postgresql_where=sa.text('position IS NULL'),
    )
    op.create_index('ix_events_occurred_at', 'events', ['occurred_at'], unique=False)
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER opt_outs_events ON opt_outs")
    op.execute("DROP TRIGGER campaigns_events ON campaigns")
    op.execute("DROP TRIGGER recipients_events ON recipients")
    op.execute("DROP FUNCTION opt_outs_events()")
    op.execute("DROP FUNCTION campaigns_events()")
    op.execute("DROP FUNCTION recipients_events()")
    op.drop_table('events')

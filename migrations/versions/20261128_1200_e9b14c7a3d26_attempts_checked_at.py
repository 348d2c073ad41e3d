"""attempts.checked_at and ix_attempts_unconfirmed: the reconciliation's queue

The reconciliation (SPEC §5.3, `app.delivery.reconcile`) looks up by message id the
attempts at their provider whose final receipt has not come for RECONCILE_AFTER_SECONDS.
`checked_at` is when it last asked (at first, when the attempt was recorded: the column's
default), null once it is done with the attempt; the partial index holds only the attempts
it may still ask about, so the due ones are one range scan whatever the table's size.
Attempts recorded before this migration count from the migration itself (the default, one
value for all: no table rewrite): they are first looked up RECONCILE_AFTER_SECONDS after it.

Revision ID: e9b14c7a3d26
Revises: d5e8a2c4f017
Create Date: 2026-11-28 12:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'e9b14c7a3d26'
down_revision: str | None = 'd5e8a2c4f017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As app.models.attempt.UNCONFIRMED was when this migration was written.
UNCONFIRMED = (
    "checked_at IS NOT NULL AND provider_message_id IS NOT NULL"
    " AND status IN ('accepted', 'queued', 'scheduled', 'sending', 'sent')"
)


def upgrade() -> None:
    op.add_column(
        'attempts',
        sa.Column(
            'checked_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=True
        ),
    )
    op.create_index(
        'ix_attempts_unconfirmed',
        'attempts',
        ['checked_at'],
        unique=False,
        postgresql_where=sa.text(UNCONFIRMED),
    )


def downgrade() -> None:
    op.drop_index('ix_attempts_unconfirmed', table_name='attempts')
    op.drop_column('attempts', 'checked_at')

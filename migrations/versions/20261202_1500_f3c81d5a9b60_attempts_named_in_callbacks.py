"""recipients.claimed_attempt_id, receipts.named_attempt_id: attempts named in callbacks

A status callback's URL names the attempt its message belongs to (`app.providers.callbacks`),
and the attempt's id is taken when the hand-over is claimed, before its row is written:
`recipients.claimed_attempt_id` keeps it while the hand-over is in flight, and
`receipts.named_attempt_id` the attempt a receipt's URL named. `ix_receipts_naming` holds the
receipts still waiting for an attempt they name: a recovery looks there first. Both columns
are nullable without a default: no table rewrite.

Revision ID: f3c81d5a9b60
Revises: e9b14c7a3d26
Create Date: 2026-12-02 15:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'f3c81d5a9b60'
down_revision: str | None = 'e9b14c7a3d26'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('recipients', sa.Column('claimed_attempt_id', sa.BigInteger(), nullable=True))
    op.add_column('receipts', sa.Column('named_attempt_id', sa.BigInteger(), nullable=True))
    op.create_index(
        'ix_receipts_naming',
        'receipts',
        ['named_attempt_id'],
        unique=False,
        postgresql_where=sa.text('applied_at IS NULL AND named_attempt_id IS NOT NULL'),
    )


def downgrade() -> None:
    op.drop_index('ix_receipts_naming', table_name='receipts')
    op.drop_column('receipts', 'named_attempt_id')
    op.drop_column('recipients', 'claimed_attempt_id')

"""receipts applier queue

Receipts are now applied by the receipt applier, oldest first, instead of being looked up
by message id when the send is recorded: the partial index follows.

Revision ID: 7c2d4e1f9a30
Revises: 5e76068b32aa
Create Date: 2026-11-27 09:10:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '7c2d4e1f9a30'
down_revision: str | None = '5e76068b32aa'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index('ix_receipts_waiting', table_name='receipts', postgresql_where=sa.text('applied_at IS NULL'))
    op.create_index('ix_receipts_unapplied', 'receipts', ['id'], unique=False, postgresql_where=sa.text('applied_at IS NULL'))


def downgrade() -> None:
    op.drop_index('ix_receipts_unapplied', table_name='receipts', postgresql_where=sa.text('applied_at IS NULL'))
    op.create_index('ix_receipts_waiting', 'receipts', ['provider', 'provider_message_id'], unique=False, postgresql_where=sa.text('applied_at IS NULL'))

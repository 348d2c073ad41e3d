"""hand-overs recorded when answered

The delivery claim no longer writes an attempt row per recipient (status `sending`) before
the provider is called: it marks the recipient with when the hand-over began (`claimed_at`)
and which claim holds it (`claimed_by`), and the attempt row is written when the provider
answers. `sending` attempts left by earlier workers stay: a claim treats them as hand-overs
whose outcome is unknown (it asks the provider before sending again), and a worker of the
earlier code still in flight records into them as before.

Revision ID: b41f0c9d2e57
Revises: 7c2d4e1f9a30
Create Date: 2026-11-27 12:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'b41f0c9d2e57'
down_revision: str | None = '7c2d4e1f9a30'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('recipients', sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('recipients', sa.Column('claimed_by', sa.Uuid(), nullable=True))


def downgrade() -> None:
    # Hand-overs in flight without an attempt row get the `sending` row the earlier code
    # expects, so that its claim asks the provider before sending again.
    op.execute(
        """
        INSERT INTO attempts (recipient_id, provider, status, created_at, updated_at)
        SELECT r.id, coalesce(a.provider, 'simulator'), 'sending', r.claimed_at, r.claimed_at
        FROM recipients r LEFT JOIN provider_accounts a ON a.school_id = r.school_id
        WHERE r.claimed_at IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM attempts x
            WHERE x.recipient_id = r.id AND x.status IN ('sending', 'unknown')
        )
        """
    )
    op.drop_column('recipients', 'claimed_by')
    op.drop_column('recipients', 'claimed_at')

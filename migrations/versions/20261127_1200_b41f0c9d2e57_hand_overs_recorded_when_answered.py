"""hand-overs recorded when answered

The delivery claim no longer writes an attempt row per recipient (status `sending`) before
the provider is called: it marks the recipient with `claimed_at`, and the attempt row is
written when the provider answers. Hand-overs in flight at upgrade time move over: their
`sending` attempts become `claimed_at` marks, so a lease that runs out still asks the
provider before sending again.

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
    op.execute(
        """
        WITH moved AS (
            DELETE FROM attempts WHERE status = 'sending'
            RETURNING recipient_id, created_at
        )
        UPDATE recipients r SET claimed_at = moved.created_at
        FROM moved WHERE r.id = moved.recipient_id
        """
    )


def downgrade() -> None:
    op.execute(
        """
        INSERT INTO attempts (recipient_id, provider, status, created_at, updated_at)
        SELECT r.id, coalesce(a.provider, 'simulator'), 'sending', r.claimed_at, r.claimed_at
        FROM recipients r LEFT JOIN provider_accounts a ON a.school_id = r.school_id
        WHERE r.claimed_at IS NOT NULL
        """
    )
    op.drop_column('recipients', 'claimed_at')

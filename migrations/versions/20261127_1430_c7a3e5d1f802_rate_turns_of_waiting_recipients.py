"""rate turns of waiting recipients

Revision ID: c7a3e5d1f802
Revises: b41f0c9d2e57
Create Date: 2026-11-27 14:30:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'c7a3e5d1f802'
down_revision: str | None = 'b41f0c9d2e57'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('provider_accounts', sa.Column('deferred_until', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('provider_accounts', 'deferred_until')

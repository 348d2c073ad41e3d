"""recipients.delivery_confirmed

Delivered recipients say whether the carrier confirmed the delivery (SPEC §5.3): true for a
confirmed delivery, false for one taken as delivered without confirmation, null in any other
status. Recipients already delivered were made so by a carrier's `delivered` (or `read`)
receipt, the only way to it until now (a Telnyx `delivery_unconfirmed` was a failure then):
they are confirmed.

Revision ID: d5e8a2c4f017
Revises: c7a3e5d1f802
Create Date: 2026-11-28 09:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'd5e8a2c4f017'
down_revision: str | None = 'c7a3e5d1f802'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('recipients', sa.Column('delivery_confirmed', sa.Boolean(), nullable=True))
    op.execute("UPDATE recipients SET delivery_confirmed = true WHERE status = 'delivered'")


def downgrade() -> None:
    op.drop_column('recipients', 'delivery_confirmed')

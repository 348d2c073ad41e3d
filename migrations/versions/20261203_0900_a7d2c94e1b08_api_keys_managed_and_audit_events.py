"""api_keys.name, last_used_at, revoked_at; audit_events

Keys a school can name, see in use and revoke (`api_keys.revoked_at`, set once), and the
audit trail of changes made through the API (README, API keys and Audit trail). Keys made
before this revision are named "API key". `ix_audit_events_school_id_id` serves the list,
newest first; `ix_audit_events_created_at` the retention sweep.

Revision ID: a7d2c94e1b08
Revises: f3c81d5a9b60
Create Date: 2026-12-03 09:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql


revision: str = 'a7d2c94e1b08'
down_revision: str | None = 'f3c81d5a9b60'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        'api_keys',
        sa.Column('name', sa.String(length=100), nullable=False, server_default='API key'),
    )
    op.alter_column('api_keys', 'name', server_default=None)
    op.add_column('api_keys', sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('api_keys', sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        'audit_events',
        sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column('school_id', sa.Uuid(), nullable=False),
        sa.Column('actor', sa.String(length=16), nullable=False),
        sa.Column('action', sa.String(length=32), nullable=False),
        sa.Column('target_id', sa.String(length=64), nullable=False),
        sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column('request_id', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['school_id'],
            ['schools.id'],
            name=op.f('fk_audit_events_school_id_schools'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events')),
    )
    op.create_index(
        op.f('ix_audit_events_school_id_id'), 'audit_events', ['school_id', 'id'], unique=False
    )
    op.create_index(
        op.f('ix_audit_events_created_at'), 'audit_events', ['created_at'], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_audit_events_created_at'), table_name='audit_events')
    op.drop_index(op.f('ix_audit_events_school_id_id'), table_name='audit_events')
    op.drop_table('audit_events')
    op.drop_column('api_keys', 'revoked_at')
    op.drop_column('api_keys', 'last_used_at')
    op.drop_column('api_keys', 'name')

"""preflight_requests: pre-flights asked of the evaluate workers and their verdicts

Revision ID: 0008_preflight_requests
Revises: 0007_builds
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0008_preflight_requests'
down_revision = '0007_builds'
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade() -> None:
    op.create_table('preflight_requests',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('source_hash', sa.String(length=64), nullable=False),
    sa.Column('settings', JSON_TYPE, nullable=False),
    sa.Column('derive_memory_limit', sa.Boolean(), nullable=False),
    sa.Column('verdict', JSON_TYPE, nullable=True),
    sa.Column('worker', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('preflight_requests')

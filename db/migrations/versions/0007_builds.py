"""builds: the build stage's state, timestamp and summary on turns; builds that travel to evaluate hosts

Revision ID: 0007_builds
Revises: 0006_real_data
Create Date: 2026-11-26

Columns are added in place (no table rebuild on SQLite, so the views of 0004 stay).
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0007_builds'
down_revision = '0006_real_data'
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade() -> None:
    op.add_column('turns', sa.Column('prebuild', JSON_TYPE, nullable=True))
    op.add_column('turns', sa.Column('built_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('builds',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('meta', JSON_TYPE, nullable=False),
    sa.Column('module', sa.LargeBinary(), nullable=True),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('turn_builds',
    sa.Column('turn_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['turn_id'], ['turns.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['key'], ['builds.key'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('turn_id', 'key')
    )
    op.create_index('ix_turn_builds_key', 'turn_builds', ['key'])
    # turns that were waiting for evaluation now wait for their build first (it finds nothing to
    # build or builds what the evaluation would have)


def downgrade() -> None:
    op.execute("UPDATE turns SET state = 'cleaned' WHERE state IN ('building', 'built')")
    op.drop_index('ix_turn_builds_key', table_name='turn_builds')
    op.drop_table('turn_builds')
    op.drop_table('builds')
    # plain ALTER TABLE on both databases (SQLite >= 3.35): batch mode would rebuild `turns` under its views
    op.execute("ALTER TABLE turns DROP COLUMN built_at")
    op.execute("ALTER TABLE turns DROP COLUMN prebuild")

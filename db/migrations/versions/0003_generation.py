"""generation: loop-abort columns on turns, token-level truth in turn_tokens

Revision ID: 0003_generation
Revises: 0001
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0003_generation'
down_revision = '0001'
branch_labels = None
depends_on = None


def _array(item):
    return sa.LargeBinary().with_variant(postgresql.ARRAY(item), 'postgresql')


def upgrade() -> None:
    with op.batch_alter_table('turns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('loop_onset', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('chars_after_onset', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('tokens_after_onset', sa.Integer(), nullable=True))
    op.create_table('turn_tokens',
    sa.Column('turn_id', sa.Integer(), nullable=False),
    sa.Column('prompt_ids', _array(sa.Integer()), nullable=True),
    sa.Column('output_ids', _array(sa.Integer()), nullable=True),
    sa.Column('output_logprobs', _array(sa.REAL()), nullable=True),
    sa.Column('weight_version', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['turn_id'], ['turns.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('turn_id')
    )


def downgrade() -> None:
    op.drop_table('turn_tokens')
    with op.batch_alter_table('turns', schema=None) as batch_op:
        batch_op.drop_column('tokens_after_onset')
        batch_op.drop_column('chars_after_onset')
        batch_op.drop_column('loop_onset')

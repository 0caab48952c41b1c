"""orchestration: an index for the reconciler's waiting-turns query

Revision ID: 0005_orchestration
Revises: 0004_views
Create Date: 2026-11-26

The reconciler asks for turns waiting for a stage since before some time (`state IN (...) AND
updated_at <= ...`, oldest first, bounded). With (state, updated_at) that is an index range scan
over the waiting turns only, not a scan of every turn ever stored. Adding an index does not rebuild
`turns`, so the views of 0004 stay as they are.
"""
from alembic import op

revision = "0005_orchestration"
down_revision = "0004_views"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_turns_state_updated", "turns", ["state", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_turns_state_updated", table_name="turns")

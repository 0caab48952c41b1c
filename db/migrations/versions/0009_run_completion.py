"""run completion: an index to ask whether a run still has a running trajectory

Revision ID: 0009_run_completion
Revises: 0008_preflight_requests
Create Date: 2026-11-27

Each trajectory that ends asks whether its run has any trajectory still running. With
(run_id, status) that is one index probe; before, it counted every trajectory of the run, so a run
of N trajectories cost N² row visits by its end.
"""
from alembic import op

revision = "0009_run_completion"
down_revision = "0008_preflight_requests"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_trajectories_run_status", "trajectories", ["run_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_trajectories_run_status", table_name="trajectories")

"""real data: a stable key and the source's own ids on problems; room for completed_with_failures

Revision ID: 0006_real_data
Revises: 0005_orchestration
Create Date: 2026-11-26

`problems.problem_key` is `level{L}/{id}` (KernelBench's level and problem id), the same whether the
problem came from a KernelBench directory (`level2/33_Gemm_...py`) or a slime JSONL line
(`extra_info.level`, `extra_info.problem_id`); `kernelbench_id` and `instance_id` are what the
source said; `prompt` is a dataset's own turn-0 prompt. Columns are added, never rebuilt. `runs.status` widens on Postgres only (SQLite does
not enforce a VARCHAR length, and altering it there would rebuild `runs`); Postgres will not alter
a column a view reads, so the views of 0004 are dropped and created again around it.
"""
from alembic import op
from alembic.script import ScriptDirectory
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0006_real_data"
down_revision = "0005_orchestration"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("problems", sa.Column("problem_key", sa.String(length=255), nullable=True))
    op.add_column("problems", sa.Column("kernelbench_id", sa.Integer(), nullable=True))
    op.add_column("problems", sa.Column("instance_id", sa.String(length=255), nullable=True))
    op.add_column("problems", sa.Column("prompt", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True))
    op.create_index("ix_problems_problem_key", "problems", ["problem_key"])
    if op.get_bind().dialect.name == "postgresql":
        _around_views(lambda: op.alter_column("runs", "status", type_=sa.String(length=32), existing_type=sa.String(length=16)))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE runs SET status = 'completed' WHERE status = 'completed_with_failures'")
        _around_views(lambda: op.alter_column("runs", "status", type_=sa.String(length=16), existing_type=sa.String(length=32)))
    op.drop_index("ix_problems_problem_key", table_name="problems")
    with op.batch_alter_table("problems") as batch_op:
        batch_op.drop_column("prompt")
        batch_op.drop_column("instance_id")
        batch_op.drop_column("kernelbench_id")
        batch_op.drop_column("problem_key")


def _around_views(change) -> None:
    views = ScriptDirectory.from_config(op.get_context().config).get_revision("0004_views").module
    views.downgrade()
    change()
    views.upgrade()

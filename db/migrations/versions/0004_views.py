"""views for analysis: turn_metrics, run_summary, problem_best

Revision ID: 0004_views
Revises: 0001
Create Date: 2026-11-27

The same views on Postgres and SQLite: only reading JSON differs, so those fragments are chosen per
dialect. Flags are 0/1 integers (NULL while unknown), so AVG(flag) is a rate on both databases.
A later migration that rebuilds `turns` on SQLite (batch mode's copy-and-rename) must drop these
views first and create them again afterwards: SQLite refuses to rename a table under a view.
"""
from alembic import op

revision = "0004_views"
down_revision = "0003_generation"
branch_labels = None
depends_on = None

VIEWS = ("problem_best", "run_summary", "turn_metrics")  # dependants first

JSON_SQL = {
    "postgresql": {
        "finish_type": "t.finish_reason ->> 'type'",
        "matched_is_text": "jsonb_typeof(t.finish_reason -> 'matched') = 'string'",
        "finish_text": "CAST(t.finish_reason AS TEXT)",
        "warnings": "CASE WHEN jsonb_typeof(t.cleaning_warnings) = 'array' THEN jsonb_array_length(t.cleaning_warnings) END",
        "model": "r.config ->> 'model'",
    },
    "sqlite": {
        "finish_type": "json_extract(t.finish_reason, '$.type')",
        "matched_is_text": "json_type(t.finish_reason, '$.matched') = 'text'",
        "finish_text": "t.finish_reason",
        "warnings": "CASE WHEN json_type(t.cleaning_warnings) = 'array' THEN json_array_length(t.cleaning_warnings) END",
        "model": "json_extract(r.config, '$.model')",
    },
}


def _flag(condition: str, known: str) -> str:
    """1 when `condition`, 0 when not, NULL while `known` is NULL."""
    return f"CASE WHEN {known} IS NULL THEN NULL WHEN {condition} THEN 1 ELSE 0 END"


def turn_metrics(sql: dict[str, str]) -> str:
    finish_type = sql["finish_type"]
    # A faster candidate counts only when correct, timed meaningfully and not disqualified (reward 0).
    faster = "t.correct AND t.speedup {op} {p} AND t.reward > 0"
    return f"""
CREATE VIEW turn_metrics AS
SELECT
    tr.run_id, t.trajectory_id, t.id AS turn_id, tr.problem_id, p.name AS problem, p.level,
    tr.sample_index, t.turn_index, t.state, tr.status AS trajectory_status, tr."return" AS trajectory_return,
    LENGTH(t.raw_response) AS answer_chars,
    LENGTH(t.cleaned_response) AS cleaned_chars,
    t.prompt_tokens, t.completion_tokens, t.cached_tokens,
    {finish_type} AS finish_type,
    CASE
        WHEN {finish_type} IS NULL THEN NULL
        WHEN {finish_type} LIKE '%loop%' OR ({finish_type} = 'abort' AND {sql["finish_text"]} LIKE '%loop%') THEN 'loop_abort'
        WHEN {finish_type} = 'stop' AND {sql["matched_is_text"]} THEN 'stop_string'
        WHEN {finish_type} = 'stop' THEN 'end_of_turn'
        ELSE {finish_type}
    END AS finish_kind,
    {_flag("t.degenerate", "t.degenerate")} AS degenerate,
    t.severity, t.chars_removed,
    {sql["warnings"]} AS repetition_warnings,
    {_flag("t.code IS NOT NULL", "t.cleaned_at")} AS has_code,
    {_flag("t.compiled", "t.compiled")} AS compiled,
    {_flag("t.correct", "t.correct")} AS correct,
    {_flag(faster.format(op=">", p=1), "t.correct")} AS fast_1,
    {_flag(faster.format(op=">=", p=2), "t.correct")} AS fast_2,
    t.speedup, t.runtime_ms, t.baseline_ms, t.error_kind, t.reward, t."return",
    prev.reward AS previous_reward,
    CASE
        WHEN t.reward IS NULL OR prev.reward IS NULL THEN NULL
        WHEN t.reward > prev.reward + 1e-9 THEN 'improved'
        WHEN t.reward < prev.reward - 1e-9 THEN 'regressed'
        ELSE 'held'
    END AS progress,
    t.created_at, t.generated_at, t.evaluated_at
FROM turns t
JOIN trajectories tr ON tr.id = t.trajectory_id
JOIN problems p ON p.id = tr.problem_id
LEFT JOIN turns prev ON prev.trajectory_id = t.trajectory_id AND prev.turn_index = t.turn_index - 1
"""


def run_summary(sql: dict[str, str]) -> str:
    rate = "CAST(AVG({0}) AS DOUBLE PRECISION)"
    rates = ",\n    ".join(rate.format(c) + f" AS {name}" for c, name in [
        ("m.degenerate", "degenerate_rate"), ("m.has_code", "extracted_rate"), ("m.compiled", "compile_rate"),
        ("m.correct", "correct_rate"), ("m.fast_1", "fast_1_rate"), ("m.fast_2", "fast_2_rate")])
    return f"""
CREATE VIEW run_summary AS
SELECT
    r.id AS run_id, r.status, {sql["model"]} AS model, r.created_at, r.finished_at,
    COUNT(DISTINCT m.trajectory_id) AS trajectories,
    COUNT(DISTINCT CASE WHEN m.trajectory_status = 'completed' THEN m.trajectory_id END) AS completed_trajectories,
    COUNT(m.turn_id) AS turns,
    SUM(CASE WHEN m.state = 'done' THEN 1 ELSE 0 END) AS done_turns,
    SUM(CASE WHEN m.state = 'failed' THEN 1 ELSE 0 END) AS failed_turns,
    {rates},
    CAST(AVG(m.reward) AS DOUBLE PRECISION) AS mean_reward,
    CAST(AVG(CASE WHEN m.turn_index = 0 THEN m.trajectory_return END) AS DOUBLE PRECISION) AS mean_return,
    MAX(CASE WHEN m.correct = 1 AND m.reward > 0 THEN m.speedup END) AS best_speedup,
    COUNT(DISTINCT CASE WHEN m.correct = 1 THEN m.problem_id END) AS solved_problems,
    COUNT(DISTINCT m.problem_id) AS problems
FROM runs r
LEFT JOIN turn_metrics m ON m.run_id = r.id
GROUP BY r.id
"""


PROBLEM_BEST = """
CREATE VIEW problem_best AS
SELECT
    m.run_id, m.problem_id, m.problem, m.level,
    COUNT(DISTINCT m.trajectory_id) AS samples,
    COUNT(DISTINCT CASE WHEN m.correct = 1 THEN m.trajectory_id END) AS solved_samples,
    MIN(CASE WHEN m.correct = 1 THEN m.turn_index END) AS first_correct_turn,
    MAX(CASE WHEN m.correct = 1 AND m.reward > 0 THEN m.speedup END) AS best_speedup,
    MAX(m.reward) AS best_reward,
    MAX(CASE WHEN m.turn_index = 0 THEN m.trajectory_return END) AS best_return
FROM turn_metrics m
GROUP BY m.run_id, m.problem_id, m.problem, m.level
"""


def upgrade() -> None:
    sql = JSON_SQL[op.get_bind().dialect.name]
    op.execute(turn_metrics(sql))
    op.execute(run_summary(sql))
    op.execute(PROBLEM_BEST)


def downgrade() -> None:
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")

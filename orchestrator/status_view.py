"""Run and turn rows for people (Rich tables) and for machines (`--json`)."""
from __future__ import annotations

from typing import Any

from rich.table import Table

from db.models import Problem, Run, Trajectory, Turn
from orchestrator.problems import problem_key


def turn_row(trajectory: Trajectory, problem: Problem, turn: Turn) -> dict[str, Any]:
    return {
        "problem": problem_key(problem.name, problem.level),
        "sample": trajectory.sample_index,
        "turn": turn.turn_index,
        "turn_id": turn.id,
        "state": turn.state,
        "attempts": turn.attempts,
        "finish_reason": (turn.finish_reason or {}).get("type"),
        "tokens_after_onset": turn.tokens_after_onset,
        "degenerate": turn.degenerate,
        "has_code": turn.code is not None if turn.cleaned_at else None,
        "compiled": turn.compiled,
        "correct": turn.correct,
        "runtime_ms": turn.runtime_ms,
        "baseline_ms": turn.baseline_ms,
        "speedup": turn.speedup,
        "flags": turn.flags,
        "reward": turn.reward,
        "return": turn.return_,
        "trajectory_status": trajectory.status,
        "error": turn.error,
    }


def run_row(run: Run, trajectories: int, finished: int) -> dict[str, Any]:
    config = run.config
    return {
        "run": run.id,
        "status": run.status,
        "created_at": run.created_at.isoformat(timespec="seconds"),
        "generator": config.get("generator"),
        "model": config.get("model"),
        "backend": config.get("evaluation", {}).get("backend"),
        "trajectories": trajectories,
        "finished": finished,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


TURN_COLUMNS = {
    "problem": "problem", "sample": "s", "turn": "t", "state": "state", "finish_reason": "finish",
    "degenerate": "degen.", "has_code": "code", "compiled": "built", "correct": "correct",
    "speedup": "speedup", "reward": "reward", "return": "return",
}


def turns_table(run: Run, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"run {run.id} · {run.status}")
    for header in TURN_COLUMNS.values():
        table.add_column(header, no_wrap=True)
    table.add_column("error", overflow="ellipsis", no_wrap=True, max_width=48)
    for row in rows:
        error = (row["error"] or "").splitlines()[0] if row["error"] else "-"
        table.add_row(*[_fmt(row[c]) for c in TURN_COLUMNS], error)
    return table


def runs_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="runs")
    for column in ("run", "status", "created_at", "generator", "model", "backend", "trajectories", "finished"):
        table.add_column(column.replace("_", " "))
    for row in rows:
        table.add_row(*[_fmt(v) for v in row.values()])
    return table


def generation_summary(figures) -> dict[str, Any]:
    """A run's prefix-cache hit rate (overall and after the first turn) and its loop aborts."""
    return {
        "prompt_tokens": figures.prompt_tokens,
        "cached_tokens": figures.cached_tokens,
        "prefix_cache_hit_rate": figures.hit_rate,
        "later_turns_prefix_cache_hit_rate": figures.later_hit_rate,
        "loop_aborts": figures.loop_aborts,
    }


def generation_line(summary: dict[str, Any]) -> str:
    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    return (f"prefix cache: {rate(summary['prefix_cache_hit_rate'])} of {summary['prompt_tokens']} prompt tokens "
            f"({rate(summary['later_turns_prefix_cache_hit_rate'])} after the first turn) · loop aborts: {summary['loop_aborts']}")

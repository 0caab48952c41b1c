"""Run and turn rows for people (Rich tables) and for machines (`--json`)."""
from __future__ import annotations

from typing import Any

from rich import box
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


def run_row(run: Run, counts) -> dict[str, Any]:
    config = run.config
    return {
        "run": run.id,
        "status": run.status,
        "created_at": run.created_at.isoformat(timespec="seconds"),
        "generator": config.get("generator"),
        "model": config.get("model"),
        "backend": config.get("evaluation", {}).get("backend"),
        "trajectories": counts.total,
        "finished": counts.total - counts.running,
        "completed": counts.completed,
        "failed": counts.failed,
        "running": counts.running,
        "cancelled": counts.cancelled,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def outcome(row: dict[str, Any]) -> str:
    """One turn's result in a few words: how the answer ended when that matters, what the cleaner
    and the evaluation made of it, and the error of a failed turn."""
    parts = [row["finish_reason"]] if row["finish_reason"] in ("length", "loop", "abort") else []
    if row["degenerate"]:
        parts.append("degenerate")
    if row["has_code"] is False:
        parts.append("no code")
    elif row["compiled"] is False:
        parts.append("not built")
    elif row["correct"] is False:
        parts.append("incorrect")
    elif row["correct"]:
        parts.append(f"correct {row['speedup']:.2f}x" if row["speedup"] is not None else "correct")
    parts += row["flags"] or []
    if row["error"] and (row["state"] == "failed" or row["compiled"] is None):
        parts.append(row["error"].splitlines()[0][:120])
    return ", ".join(parts) or "-"


def turns_table(run: Run, rows: list[dict[str, Any]]) -> Table:
    """Fits 80 columns: the numbers never wrap, a long problem name and the outcome fold onto more
    lines, and a problem's name is written once, on its first row."""
    table = Table(title=f"run {run.id} · {run.status}", box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    table.add_column("problem", overflow="fold", ratio=1, min_width=14)
    for header in ("s", "t", "state"):
        table.add_column(header, no_wrap=True)
    table.add_column("outcome", overflow="fold", ratio=1, min_width=14)
    for header in ("reward", "return"):
        table.add_column(header, no_wrap=True, justify="right")
    previous = None
    for row in rows:
        name = row["problem"] if row["problem"] != previous else ""
        previous = row["problem"]
        table.add_row(name, _fmt(row["sample"]), _fmt(row["turn"]), row["state"], outcome(row), _fmt(row["reward"]), _fmt(row["return"]))
    return table


RUNS_COLUMNS = {"run": "run", "status": "status", "created_at": "created", "model": "model", "trajectories": "traj.",
                "completed": "done", "failed": "failed", "running": "running"}


def runs_table(rows: list[dict[str, Any]]) -> Table:
    """Trajectories of each run by how they ended: failures in plain sight."""
    table = Table(title="runs", box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    for key, header in RUNS_COLUMNS.items():
        table.add_column(header, no_wrap=key not in ("model", "status"), overflow="fold", justify="right" if key in ("trajectories", "completed", "failed", "running") else "left")
    for row in rows:
        cells = [_fmt(row[key]) for key in RUNS_COLUMNS]
        cells[1] = row["status"] + (f" ({row['cancelled']} cancelled)" if row["cancelled"] else "")
        cells[2] = row["created_at"].replace("T", " ")[:16]
        cells[5 + 1] = f"[bold red]{row['failed']}[/]" if row["failed"] else "0"
        table.add_row(*cells)
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

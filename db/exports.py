"""What exports read: a run's trajectories, then their turns in chunks, as plain records.

Turns come out as dicts of every column `turns` has (columns added later reach the exporters without
a change here), with the turn's `turn_tokens` row under "tokens" (None when the run recorded none).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, LargeBinary, String, Text, bindparam, select, text
from sqlalchemy.orm import Session

from db.models import Problem, Trajectory, Turn, TurnTokens
from db.token_arrays import TokenArray


@dataclass(frozen=True)
class TrajectoryRecord:
    trajectory_id: int
    run_id: int
    problem: str
    level: int | None
    problem_source: str
    sample_index: int
    status: str
    return_: float | None
    finished_at: datetime | None
    turns: list[dict[str, Any]] = field(default_factory=list)


def trajectory_heads(session: Session, run_id: int) -> list[TrajectoryRecord]:
    """The run's trajectories without their turns (enough to decide which groups are complete)."""
    rows = session.execute(
        select(Trajectory, Problem).join(Problem, Problem.id == Trajectory.problem_id).where(Trajectory.run_id == run_id).order_by(Problem.name, Trajectory.sample_index)
    )
    return [_record(trajectory, problem) for trajectory, problem in rows]


def with_turns(session: Session, heads: list[TrajectoryRecord], chunk: int = 200) -> Iterator[TrajectoryRecord]:
    """The given trajectories with their turns (oldest first), loaded `chunk` trajectories at a time."""
    for start in range(0, len(heads), chunk):
        part = heads[start : start + chunk]
        turns: dict[int, list[dict[str, Any]]] = {head.trajectory_id: [] for head in part}
        metrics = _metrics_by_turn(session, list(turns))
        query = (select(Turn, TurnTokens).outerjoin(TurnTokens, TurnTokens.turn_id == Turn.id)
                 .where(Turn.trajectory_id.in_(list(turns))).order_by(Turn.trajectory_id, Turn.turn_index))
        for turn, tokens in session.execute(query):
            turns[turn.trajectory_id].append({**turn_dict(turn), "tokens": tokens_dict(tokens), "metrics": metrics[turn.id]})
        for head in part:
            yield TrajectoryRecord(**{**head.__dict__, "turns": turns[head.trajectory_id]})
        session.expunge_all()  # a chunk's rows are not needed once written


# What the `turn_metrics` view derives per turn, so exports select and label turns as reports count them.
METRIC_COLUMNS = ("finish_kind", "answer_chars", "has_code", "compiled", "correct", "fast_1", "fast_2", "progress")


def _metrics_by_turn(session: Session, trajectory_ids: list[int]) -> dict[int, dict[str, Any]]:
    query = text(f"SELECT turn_id, {', '.join(METRIC_COLUMNS)} FROM turn_metrics WHERE trajectory_id IN :ids").bindparams(bindparam("ids", expanding=True))
    return {row.turn_id: {c: getattr(row, c) for c in METRIC_COLUMNS} for row in session.execute(query, {"ids": trajectory_ids})}


def turn_dict(turn: Turn) -> dict[str, Any]:
    return {attribute.key: getattr(turn, attribute.key) for attribute in Turn.__mapper__.column_attrs}


# The columns of `turn_tokens` a turn's "tokens" carries (its key and timestamp add nothing to the turn's).
TOKEN_COLUMNS = ("prompt_ids", "output_ids", "output_logprobs", "weight_version")


def tokens_dict(tokens: TurnTokens | None) -> dict[str, Any] | None:
    return None if tokens is None else {name: getattr(tokens, name) for name in TOKEN_COLUMNS}


def _record(trajectory: Trajectory, problem: Problem) -> TrajectoryRecord:
    return TrajectoryRecord(
        trajectory_id=trajectory.id, run_id=trajectory.run_id, problem=problem.name, level=problem.level, problem_source=problem.source,
        sample_index=trajectory.sample_index, status=trajectory.status, return_=trajectory.return_, finished_at=trajectory.finished_at,
    )


# Column kinds for typed exports (Parquet). JSON columns travel as JSON text: their shape varies by row.
_KINDS = ((Boolean, "bool"), (Integer, "int"), (Float, "float"), (DateTime, "datetime"), (JSON, "json"), (LargeBinary, "bytes"), (String, "text"), (Text, "text"))


def turn_column_kinds() -> dict[str, str]:
    """Attribute name → kind ("bool", "int", "float", "datetime", "json", "bytes", "text")."""
    return {attribute.key: _kind(attribute.columns[0].type) for attribute in Turn.__mapper__.column_attrs}


def token_column_kinds() -> dict[str, str]:
    """TOKEN_COLUMNS → kind: "int_list" and "float_list" (32-bit values) for the arrays, "text" otherwise."""
    return {name: _kind(TurnTokens.__table__.columns[name].type) for name in TOKEN_COLUMNS}


def _kind(column_type) -> str:
    if isinstance(column_type, TokenArray):
        return "int_list" if column_type.typecode == "i" else "float_list"
    for sql_type, kind in _KINDS:
        if isinstance(column_type, sql_type):
            return kind
    return "json"

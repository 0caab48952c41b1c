"""Read-only queries for reports and monitoring, over the analysis views (migration 0004_views)
and the tables. Every figure a report shows is derived in the `turn_metrics` view, so SQL users and
`kturn report` agree by construction."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from db.models import WORKING_TURN_STATES, Run, RunStatus, Trajectory, Turn, TurnState, in_states


def _dicts(session: Session, sql: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in session.execute(text(sql), params)]


def turn_metrics(session: Session, run_id: int) -> list[dict[str, Any]]:
    """One row per turn of the run, as the `turn_metrics` view derives it."""
    return _dicts(session, "SELECT * FROM turn_metrics WHERE run_id = :run ORDER BY problem, sample_index, turn_index", run=run_id)


def run_summary(session: Session, run_id: int) -> dict[str, Any] | None:
    rows = _dicts(session, "SELECT * FROM run_summary WHERE run_id = :run", run=run_id)
    return rows[0] if rows else None


def problem_best(session: Session, run_id: int) -> list[dict[str, Any]]:
    return _dicts(session, "SELECT * FROM problem_best WHERE run_id = :run ORDER BY problem", run=run_id)


# ---------------------------------------------------------------- monitoring (kturn top, kturn metrics)


def open_runs_turn_states(session: Session) -> list[tuple[int, str, int]]:
    """(run id, turn state, turns) for every running run: only the runs in flight are scanned."""
    rows = session.execute(
        select(Trajectory.run_id, Turn.state, func.count(Turn.id))
        .join(Turn, Turn.trajectory_id == Trajectory.id)
        .join(Run, Run.id == Trajectory.run_id)
        .where(Run.status == RunStatus.running.value)
        .group_by(Trajectory.run_id, Turn.state)
        .order_by(Trajectory.run_id)
    )
    return [tuple(row) for row in rows]


def runs_by_status(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Run.status, func.count(Run.id)).group_by(Run.status)).all())


def expired_lease_count(session: Session, now: datetime) -> int:
    """Working turns whose lease ran out: their worker died and the reconciler has not acted yet."""
    return session.scalar(select(func.count(Turn.id)).where(in_states(Turn.state, WORKING_TURN_STATES), Turn.lease_expires_at < now))

"""Run queries: creating a run in one transaction, listing, status rows, cancelling, completing."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from db import turns as turn_queries
from db.models import Problem, Run, RunStatus, Trajectory, TrajectoryStatus, Turn, TurnState, utcnow


@dataclass(frozen=True)
class NewProblem:
    name: str
    level: int | None
    source: str
    source_hash: str
    origin: str | None


def upsert_problem(session: Session, problem: NewProblem) -> int:
    existing = session.scalar(select(Problem.id).where(Problem.name == problem.name, Problem.source_hash == problem.source_hash))
    if existing is not None:
        return existing
    row = Problem(name=problem.name, level=problem.level, source=problem.source, source_hash=problem.source_hash, origin=problem.origin)
    session.add(row)
    session.flush()
    return row.id


def create(session: Session, config: dict[str, Any], problems: Iterable[NewProblem], samples: int) -> tuple[int, list[int]]:
    """A run with one trajectory per (problem, sample) and each trajectory's turn 0, pending.

    Returns the run id and the ids of the turns to enqueue.
    """
    run = Run(config=config, status=RunStatus.running.value)
    session.add(run)
    session.flush()
    pairs = [(upsert_problem(session, problem), sample_index) for problem in problems for sample_index in range(samples)]
    if not pairs:
        return run.id, []
    trajectory_ids = session.scalars(
        insert(Trajectory).returning(Trajectory.id, sort_by_parameter_order=True),
        [{"run_id": run.id, "problem_id": problem_id, "sample_index": sample_index} for problem_id, sample_index in pairs],
    ).all()
    return run.id, turn_queries.add_first_turns(session, list(trajectory_ids))


def get(session: Session, run_id: int) -> Run | None:
    return session.get(Run, run_id)


def _finished_count():
    return func.count(Trajectory.id).filter(Trajectory.status != TrajectoryStatus.running.value)


def recent(session: Session, limit: int) -> list[tuple[Run, int, int]]:
    """Newest runs first, each with (trajectories, finished trajectories)."""
    rows = session.execute(
        select(Run, func.count(Trajectory.id), _finished_count())
        .outerjoin(Trajectory, Trajectory.run_id == Run.id)
        .group_by(Run.id)
        .order_by(Run.id.desc())
        .limit(limit)
    )
    return [tuple(row) for row in rows]


def turn_rows(session: Session, run_id: int) -> list[tuple[Trajectory, Problem, Turn]]:
    rows = session.execute(
        select(Trajectory, Problem, Turn)
        .join(Problem, Problem.id == Trajectory.problem_id)
        .join(Turn, Turn.trajectory_id == Trajectory.id)
        .where(Trajectory.run_id == run_id)
        .order_by(Problem.name, Trajectory.sample_index, Turn.turn_index)
    )
    return [tuple(row) for row in rows]


def progress(session: Session, run_id: int) -> tuple[int, int]:
    """(finished trajectories, all trajectories)."""
    done, total = session.execute(select(_finished_count(), func.count(Trajectory.id)).where(Trajectory.run_id == run_id)).one()
    return done, total


def complete_if_finished(session: Session, run_id: int) -> bool:
    run = session.get(Run, run_id, with_for_update=True)
    done, total = progress(session, run_id)
    if run.status != RunStatus.running.value or done < total:
        return False
    run.status = RunStatus.completed.value
    run.finished_at = utcnow()
    return True


def cancel(session: Session, run_id: int) -> int:
    """Cancel a run: its open trajectories and turns end as cancelled. Returns the turns cancelled.

    Trajectory rows are locked before turn rows and the run row, the order every stage keeps."""
    open_ids = list(
        session.scalars(
            select(Trajectory.id)
            .where(Trajectory.run_id == run_id, Trajectory.status == TrajectoryStatus.running.value)
            .order_by(Trajectory.id)
            .with_for_update()
        )
    )
    for trajectory_id in open_ids:
        turn_queries.finish_trajectory(session, trajectory_id, TrajectoryStatus.cancelled, None)
    cancelled = turn_queries.cancel_open(session, open_ids)
    run = session.get(Run, run_id, with_for_update=True)
    if run.status == RunStatus.running.value:
        run.status = RunStatus.cancelled.value
        run.finished_at = utcnow()
    return cancelled

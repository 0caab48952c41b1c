"""Run queries: creating a run in one transaction, listing, status rows, cancelling, completing."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, case, exists, func, insert, select, tuple_, update
from sqlalchemy.orm import Session

from db import turns as turn_queries
from db.models import Problem, Run, RunStatus, Trajectory, TrajectoryStatus, Turn, TurnState, utcnow
from db.session import Executor, dialect_of, driver_rowcount, driver_rows


@dataclass(frozen=True)
class NewProblem:
    name: str
    level: int | None
    source: str
    source_hash: str
    origin: str | None
    problem_key: str | None = None
    kernelbench_id: int | None = None
    instance_id: str | None = None
    prompt: list[dict[str, str]] | None = None


# Two bound parameters per key: well inside Postgres's 65,535 per statement.
KEYS_PER_SELECT = 5000


def upsert_problems(session: Session, problems: list[NewProblem]) -> list[int]:
    """The row of each problem's name and source, in the order given, created where missing; what a
    later source knows (its key, ids, prompt) is filled in. One SELECT (per 5,000) and one INSERT for them all."""
    keys = sorted({(p.name, p.source_hash) for p in problems})
    rows = {}
    for start in range(0, len(keys), KEYS_PER_SELECT):
        chunk = keys[start:start + KEYS_PER_SELECT]
        rows.update({(row.name, row.source_hash): row for row in session.scalars(
            select(Problem).where(tuple_(Problem.name, Problem.source_hash).in_(chunk)))})
    for problem in problems:
        row = rows.get((problem.name, problem.source_hash))
        if row is None:
            row = rows[problem.name, problem.source_hash] = Problem(
                name=problem.name, level=problem.level, source=problem.source, source_hash=problem.source_hash, origin=problem.origin)
            session.add(row)
        for column in ("problem_key", "kernelbench_id", "instance_id", "prompt"):
            if getattr(problem, column) is not None:
                setattr(row, column, getattr(problem, column))
    session.flush()
    return [rows[p.name, p.source_hash].id for p in problems]


def create(session: Session, config: dict[str, Any], problems: Iterable[NewProblem], samples: int) -> tuple[int, list[int]]:
    """A run with one trajectory per (problem, sample) and each trajectory's turn 0, pending.

    Returns the run id and the ids of the turns to enqueue.
    """
    run = Run(config=config, status=RunStatus.running.value)
    session.add(run)
    session.flush()
    problems = list(problems)
    pairs = [(problem_id, sample_index) for problem_id in upsert_problems(session, problems) for sample_index in range(samples)]
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


def _status_count(status: TrajectoryStatus):
    return func.count(Trajectory.id).filter(Trajectory.status == status.value)


@dataclass(frozen=True)
class TrajectoryCounts:
    total: int
    completed: int
    failed: int
    running: int
    cancelled: int


def recent(session: Session, limit: int) -> list[tuple[Run, TrajectoryCounts]]:
    """Newest runs first, each with its trajectories counted by status."""
    statuses = (TrajectoryStatus.completed, TrajectoryStatus.failed, TrajectoryStatus.running, TrajectoryStatus.cancelled)
    rows = session.execute(
        select(Run, func.count(Trajectory.id), *map(_status_count, statuses))
        .outerjoin(Trajectory, Trajectory.run_id == Run.id)
        .group_by(Run.id)
        .order_by(Run.id.desc())
        .limit(limit)
    )
    return [(row[0], TrajectoryCounts(*row[1:])) for row in rows]


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


def complete_if_finished(db: Executor, run_id: int) -> bool:
    """End a running run once none of its trajectories runs; called in the transaction that ended
    one. The run row is locked first, by a statement of its own: two trajectories ending at once
    are serialised, and the second's check, a later statement, reads the first's end once
    committed. The check is part of the run's update, a probe of ix_trajectories_run_status, not a
    count of the run's trajectories. On Postgres both run on the driver (db.session)."""
    params = {"run": run_id, "now": utcnow()}
    driver_rows(db, _locking_run(), params)
    return driver_rowcount(db, _completing(dialect_of(db)), params) == 1


@lru_cache(maxsize=1)
def _locking_run():
    return select(Run.id).where(Run.id == bindparam("run")).with_for_update()


@lru_cache(maxsize=4)
def _completing(dialect: str):
    def any_trajectory(status: TrajectoryStatus):
        return exists().where(Trajectory.run_id == bindparam("run"), Trajectory.status == status.value)

    return (
        update(Run)
        .where(Run.id == bindparam("run"), Run.status == RunStatus.running.value, ~any_trajectory(TrajectoryStatus.running))
        .values(status=case((any_trajectory(TrajectoryStatus.failed), RunStatus.completed_with_failures.value), else_=RunStatus.completed.value),
                # the statement's own start, after the lock: a transaction's now() may precede the end of the trajectory it waited for
                finished_at=func.statement_timestamp() if dialect == "postgresql" else bindparam("now", type_=Run.finished_at.type))
    )


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


def failed_counts(session: Session, run_id: int) -> tuple[int, int]:
    """(failed trajectories, all trajectories) of a run."""
    failed, total = session.execute(select(_status_count(TrajectoryStatus.failed), func.count(Trajectory.id)).where(Trajectory.run_id == run_id)).one()
    return failed, total


def revive_failed(session: Session, run_id: int) -> list[tuple[int, str]]:
    """Give each failed trajectory of a run a new attempt of its failed turn, from the stage that
    failed (work already stored for the turn, its answer or its cleaning, is kept): the turn goes
    back to that stage's waiting state, the trajectory and the run to running. Returns (turn id,
    waiting state) of each revived turn, to enqueue. Locks trajectories before turns and the run."""
    if session.get(Run, run_id).status == RunStatus.cancelled.value:
        return []
    failed_ids = list(session.scalars(
        select(Trajectory.id).where(Trajectory.run_id == run_id, Trajectory.status == TrajectoryStatus.failed.value)
        .order_by(Trajectory.id).with_for_update()
    ))
    revived = []
    for trajectory_id in failed_ids:
        turn = session.scalars(select(Turn).where(Turn.trajectory_id == trajectory_id).order_by(Turn.turn_index.desc()).limit(1)).one()
        if turn.state != TurnState.failed.value:
            continue
        waiting = (TurnState.built if turn.built_at else TurnState.cleaned if turn.cleaned_at
                   else TurnState.generated if turn.generated_at else TurnState.pending)
        turn.state, turn.stage_attempts, turn.error, turn.error_kind = waiting.value, 0, None, None
        turn.claimed_by, turn.lease_expires_at, turn.updated_at = None, None, turn_queries.db_now(session)
        trajectory = session.get(Trajectory, trajectory_id)
        trajectory.status, trajectory.finished_at, trajectory.return_ = TrajectoryStatus.running.value, None, None
        revived.append((turn.id, waiting.value))
    run = session.get(Run, run_id, with_for_update=True)
    if revived:
        run.status, run.finished_at = RunStatus.running.value, None
    return revived

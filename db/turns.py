"""Turn queries: claiming, storing each stage's result, failing, and what the reconciler needs.

Every store is conditional on the claim that made it (`state` and `attempts`), so a late or
duplicate worker whose lease was handed on can never overwrite a newer attempt.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import FINAL_TURN_STATES, WAITING_TURN_STATES, WORKING_TURN_STATES, Trajectory, TrajectoryStatus, Turn, TurnState, utcnow


def db_now(session: Session) -> datetime:
    """The database's clock. Leases and waiting times are written by one host and judged by another
    (the reconciler), so they are all read off one clock rather than each host's own."""
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(select(func.now()))
    return utcnow()  # the embedded SQLite lives on one host


@dataclass(frozen=True)
class Claim:
    turn_id: int
    attempt: int  # the fence: a store is accepted only while `attempts` still equals it
    working: TurnState
    stage_attempt: int = 1


def claim(session: Session, turn_id: int, waiting: TurnState, working: TurnState, worker: str, lease_seconds: float) -> Claim | None:
    """Move a turn from its waiting to its working state; None when another delivery got there first."""
    now = db_now(session)
    result = session.execute(
        update(Turn)
        .where(Turn.id == turn_id, Turn.state == waiting.value)
        .values(
            state=working.value,
            attempts=Turn.attempts + 1,
            stage_attempts=Turn.stage_attempts + 1,
            claimed_by=worker,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            updated_at=now,
        )
        .returning(Turn.attempts, Turn.stage_attempts)
    ).first()
    return None if result is None else Claim(turn_id, result[0], working, result[1])


def claim_of(turn: Turn) -> Claim:
    """The claim a working turn is held under (for the reconciler, which acts in its place)."""
    return Claim(turn.id, turn.attempts, TurnState(turn.state), turn.stage_attempts)


def release_claim(session: Session, claim: Claim, waiting: TurnState) -> bool:
    """Hand a claimed turn back to its waiting state (to be claimed again), if `claim` still holds it."""
    result = session.execute(
        update(Turn)
        .where(Turn.id == claim.turn_id, Turn.state == claim.working.value, Turn.attempts == claim.attempt)
        .values(state=waiting.value, lease_expires_at=None, claimed_by=None, updated_at=db_now(session))
    )
    return result.rowcount == 1


def lock_trajectory(session: Session, trajectory_id: int) -> Trajectory:
    """Lock the trajectory row. Every path that ends a trajectory or adds a turn to it takes this
    lock first (and before any turn row), so cancelling and advancing cannot interleave."""
    return session.get(Trajectory, trajectory_id, with_for_update=True, populate_existing=True)


def store(session: Session, claim: Claim, next_state: TurnState, **values: Any) -> bool:
    """Store a stage's result and move on, only if `claim` still holds the turn."""
    result = session.execute(
        update(Turn)
        .where(Turn.id == claim.turn_id, Turn.state == claim.working.value, Turn.attempts == claim.attempt)
        .values(state=next_state.value, stage_attempts=0, lease_expires_at=None, updated_at=db_now(session), **values)
    )
    return result.rowcount == 1


def get(session: Session, turn_id: int) -> Turn | None:
    return session.get(Turn, turn_id)


def history(session: Session, trajectory_id: int, before_index: int) -> list[Turn]:
    """The trajectory's earlier turns, oldest first."""
    return list(
        session.scalars(
            select(Turn).where(Turn.trajectory_id == trajectory_id, Turn.turn_index < before_index).order_by(Turn.turn_index)
        )
    )


def add_next(session: Session, trajectory_id: int, turn_index: int) -> int:
    turn = Turn(trajectory_id=trajectory_id, turn_index=turn_index, state=TurnState.pending.value, updated_at=db_now(session))
    session.add(turn)
    session.flush()
    return turn.id


def finish_trajectory(session: Session, trajectory_id: int, status: TrajectoryStatus, returns: dict[int, float] | None) -> bool:
    """End a running trajectory; `returns` maps turn index → discounted return (None for a failed one).
    False when it had already ended (cancelled meanwhile, say)."""
    trajectory = lock_trajectory(session, trajectory_id)
    if trajectory.status != TrajectoryStatus.running.value:
        return False
    trajectory.status = status.value
    trajectory.finished_at = utcnow()
    if returns:
        if status is TrajectoryStatus.completed:  # a failed one has no return of its own; its scored turns do
            trajectory.return_ = returns[0]
        for turn in trajectory.turns:
            turn.return_ = returns.get(turn.turn_index)
    return True


def expired_leases(session: Session, now: datetime) -> list[Turn]:
    working = [state.value for state in WORKING_TURN_STATES]
    return list(session.scalars(select(Turn).where(Turn.state.in_(working), Turn.lease_expires_at < now).order_by(Turn.id)))


def live_leases(session: Session, now: datetime) -> list[Turn]:
    """Working turns whose lease still runs: their worker may be alive, so the reconciler waits."""
    working = [TurnState.generating.value, TurnState.cleaning.value, TurnState.evaluating.value]
    return list(session.scalars(select(Turn).where(Turn.state.in_(working), Turn.lease_expires_at >= now).order_by(Turn.lease_expires_at)))


def waiting_since(session: Session, before: datetime) -> list[Turn]:
    waiting = [state.value for state in WAITING_TURN_STATES]
    return list(session.scalars(select(Turn).where(Turn.state.in_(waiting), Turn.updated_at <= before).order_by(Turn.id)))


def cancel_open(session: Session, trajectory_ids: list[int]) -> int:
    result = session.execute(
        update(Turn)
        .where(Turn.trajectory_id.in_(trajectory_ids), Turn.state.not_in([s.value for s in FINAL_TURN_STATES]))
        .values(state=TurnState.cancelled.value, lease_expires_at=None, updated_at=db_now(session))
    )
    return result.rowcount


def with_raw_response(session: Session, run_id: int) -> list[Turn]:
    return list(
        session.scalars(
            select(Turn).join(Trajectory, Trajectory.id == Turn.trajectory_id).where(Trajectory.run_id == run_id, Turn.raw_response.is_not(None)).order_by(Turn.id)
        )
    )


def update_cleaning(session: Session, turn_id: int, values: dict[str, Any]) -> None:
    """Replace a turn's cleaning columns (never its raw response)."""
    session.execute(update(Turn).where(Turn.id == turn_id).values(updated_at=db_now(session), **values))


def extend_lease(session: Session, claim: Claim, lease_seconds: float) -> bool:
    result = session.execute(
        update(Turn)
        .where(Turn.id == claim.turn_id, Turn.state == claim.working.value, Turn.attempts == claim.attempt)
        .values(lease_expires_at=db_now(session) + timedelta(seconds=lease_seconds))
    )
    return result.rowcount == 1

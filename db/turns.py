"""Turn queries: claiming, storing each stage's result, failing, and what the reconciler needs.

Every store is conditional on the claim that made it (`state` and `attempts`), so a late or
duplicate worker whose lease was handed on can never overwrite a newer attempt.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, insert, select, update
from sqlalchemy.orm import Session

from db.models import FINAL_TURN_STATES, Problem, Run, Trajectory, TrajectoryStatus, Turn, TurnState, utcnow


def db_now(session: Session) -> datetime:
    """The database's clock. Leases and waiting times are written by one host and judged by another
    (the reconciler), so they are all read off one clock rather than each host's own."""
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(select(func.now()))
    return utcnow()  # the embedded SQLite lives on one host


def clock(session: Session):
    """The same clock as `db_now`, as an expression a statement evaluates itself: no round trip of
    its own on Postgres."""
    return func.now() if session.get_bind().dialect.name == "postgresql" else utcnow()


@dataclass(frozen=True)
class Claim:
    turn_id: int
    attempt: int  # the fence: a store is accepted only while `attempts` still equals it
    working: TurnState
    stage_attempt: int = 1
    trajectory_id: int | None = None


# What a stage reads of its own turn: returned by the claim itself, so it costs no second read.
CLAIMED_COLUMNS = (Turn.attempts, Turn.stage_attempts, Turn.trajectory_id, Turn.turn_index, Turn.raw_response,
                   Turn.finish_reason, Turn.code, Turn.degenerate, Turn.no_code_reason)


def claim(session: Session, turn_id: int, waiting: TurnState, working: TurnState, worker: str, lease_seconds: float) -> Claim | None:
    """Move a turn from its waiting to its working state; None when another delivery got there first."""
    claimed = claim_row(session, turn_id, waiting, working, worker, lease_seconds)
    return None if claimed is None else claimed[0]


def claim_row(session: Session, turn_id: int, waiting: TurnState, working: TurnState, worker: str,
              lease_seconds: float) -> tuple[Claim, dict[str, Any]] | None:
    """`claim`, in one statement that also returns the turn's own columns (CLAIMED_COLUMNS)."""
    now = clock(session)
    row = session.execute(
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
        .returning(*CLAIMED_COLUMNS)
    ).first()
    if row is None:
        return None
    values = row._asdict()
    return Claim(turn_id, values["attempts"], working, values["stage_attempts"], values["trajectory_id"]), values


def context_rows(session: Session, trajectory_id: int, before_index: int) -> list[dict[str, Any]]:
    """A trajectory's run config and problem, with its turns before `before_index` in one read: a
    row per earlier turn, oldest first (one row with NULL turn columns when there is none)."""
    rows = session.execute(
        select(Trajectory.run_id, Trajectory.sample_index, Run.config, Problem.name, Problem.level, Problem.source,
               Problem.origin, Turn.cleaned_response, Turn.feedback, Turn.reward, Turn.turn_index)
        .select_from(Trajectory)
        .join(Run, Run.id == Trajectory.run_id)
        .join(Problem, Problem.id == Trajectory.problem_id)
        .outerjoin(Turn, and_(Turn.trajectory_id == Trajectory.id, Turn.turn_index < before_index))
        .where(Trajectory.id == trajectory_id)
        .order_by(Turn.turn_index)
    )
    return [row._asdict() for row in rows]


def claim_of(turn: Turn) -> Claim:
    """The claim a working turn is held under (for the reconciler, which acts in its place)."""
    return Claim(turn.id, turn.attempts, TurnState(turn.state), turn.stage_attempts, turn.trajectory_id)


def _held(session: Session, claim: Claim, lease_expired: bool):
    """`claim` still holds the turn; with `lease_expired`, its lease has also run out at this very
    moment (so a lease its worker renewed after someone looked is never taken over)."""
    conditions = [Turn.id == claim.turn_id, Turn.state == claim.working.value, Turn.attempts == claim.attempt]
    if lease_expired:
        conditions.append(Turn.lease_expires_at < clock(session))
    return and_(*conditions)


def release_claim(session: Session, claim: Claim, waiting: TurnState, lease_expired: bool = False) -> bool:
    """Hand a claimed turn back to its waiting state (to be claimed again), if `claim` still holds it."""
    result = session.execute(
        update(Turn)
        .where(_held(session, claim, lease_expired))
        .values(state=waiting.value, lease_expires_at=None, claimed_by=None, updated_at=clock(session))
    )
    return result.rowcount == 1


def lock_trajectory(session: Session, trajectory_id: int):
    """Lock the trajectory row; its (status, run_id). Every path that ends a trajectory or adds a
    turn to it takes this lock first (and before any turn row), so cancelling and advancing cannot
    interleave."""
    return session.execute(
        select(Trajectory.status, Trajectory.run_id).where(Trajectory.id == trajectory_id).with_for_update()
    ).one()


def store(session: Session, claim: Claim, next_state: TurnState, lease_expired: bool = False, **values: Any) -> bool:
    """Store a stage's result and move on, only if `claim` still holds the turn (and, with
    `lease_expired`, only if its lease has run out)."""
    result = session.execute(
        update(Turn)
        .where(_held(session, claim, lease_expired))
        .values(state=next_state.value, stage_attempts=0, lease_expires_at=None, updated_at=clock(session), **values)
    )
    return result.rowcount == 1


def add_next(session: Session, trajectory_id: int, turn_index: int) -> int:
    return session.scalar(
        insert(Turn)
        .values(trajectory_id=trajectory_id, turn_index=turn_index, state=TurnState.pending.value, updated_at=clock(session))
        .returning(Turn.id)
    )


def add_first_turns(session: Session, trajectory_ids: list[int]) -> list[int]:
    """Turn 0 of each trajectory, pending, in one statement; their ids in the order given."""
    if not trajectory_ids:
        return []
    now = db_now(session)
    return session.scalars(
        insert(Turn).returning(Turn.id, sort_by_parameter_order=True),
        [{"trajectory_id": t, "turn_index": 0, "state": TurnState.pending.value, "updated_at": now, "created_at": now} for t in trajectory_ids],
    ).all()


def finish_trajectory(session: Session, trajectory_id: int, status: TrajectoryStatus, returns: dict[int, float] | None) -> bool:
    """End a running trajectory; `returns` maps turn index → discounted return (None for a failed one).
    False when it had already ended (cancelled meanwhile, say). Its row is updated (so locked)
    before any of its turns."""
    ended = session.execute(
        update(Trajectory)
        .where(Trajectory.id == trajectory_id, Trajectory.status == TrajectoryStatus.running.value)
        .values(status=status.value, finished_at=clock(session), return_=returns[0] if returns else None)
    )
    if ended.rowcount != 1:
        return False
    if returns:
        session.execute(
            update(Turn)
            .where(Turn.trajectory_id == trajectory_id, Turn.turn_index.in_(list(returns)))
            .values(return_=case(returns, value=Turn.turn_index))
        )
    return True


WORKING = (TurnState.generating.value, TurnState.cleaning.value, TurnState.evaluating.value)
WAITING = (TurnState.pending.value, TurnState.generated.value, TurnState.cleaned.value)


def expired_leases(session: Session, now: datetime, limit: int | None = None) -> list[Claim]:
    """The claims of working turns whose lease ran out, oldest lease first (index ix_turns_state_lease)."""
    rows = session.execute(
        select(Turn.id, Turn.attempts, Turn.state, Turn.stage_attempts, Turn.trajectory_id)
        .where(Turn.state.in_(WORKING), Turn.lease_expires_at < now)
        .order_by(Turn.lease_expires_at)
        .limit(limit)
    )
    return [Claim(id_, attempts, TurnState(state), stage_attempts, trajectory_id) for id_, attempts, state, stage_attempts, trajectory_id in rows]


def waiting_since(session: Session, before: datetime, limit: int | None = None) -> list[tuple[int, str]]:
    """(id, state) of turns waiting for a stage since `before` or longer, longest first (index
    ix_turns_state_updated)."""
    rows = session.execute(
        select(Turn.id, Turn.state).where(Turn.state.in_(WAITING), Turn.updated_at <= before).order_by(Turn.updated_at).limit(limit)
    )
    return [tuple(row) for row in rows]


def cancel_open(session: Session, trajectory_ids: list[int]) -> int:
    result = session.execute(
        update(Turn)
        .where(Turn.trajectory_id.in_(trajectory_ids), Turn.state.not_in([s.value for s in FINAL_TURN_STATES]))
        .values(state=TurnState.cancelled.value, lease_expires_at=None, updated_at=clock(session))
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
        .values(lease_expires_at=clock(session) + timedelta(seconds=lease_seconds))
    )
    return result.rowcount == 1

"""Turn queries: claiming, storing each stage's result, failing, and what the reconciler needs.

Every store is conditional on the claim that made it (`state` and `attempts`), so a late or
duplicate worker whose lease was handed on can never overwrite a newer attempt.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (ARRAY, Float, Integer, Interval, String, Text, and_, bindparam, case, cast, exists, func, insert, literal, literal_column, null,
                        select, update)
from sqlalchemy.orm import Session, aliased

from db.session import Executor, dialect_of, driver_rowcount, driver_rows
from db.models import (FINAL_TURN_STATES, WAITING_TURN_STATES, WORKING_TURN_STATES, Problem, Run, Trajectory, TrajectoryStatus,
                       Turn, TurnBuild, TurnState, in_states, utcnow)


def db_now(db: Executor) -> datetime:
    """The database's clock. Leases and waiting times are written by one host and judged by another
    (the reconciler), so they are all read off one clock rather than each host's own."""
    if dialect_of(db) == "postgresql":
        return db.scalar(select(func.now()))
    return utcnow()  # the embedded SQLite lives on one host


def clock(db: Executor):
    """The same clock as `db_now`, as an expression a statement evaluates itself: no round trip of
    its own on Postgres."""
    return func.now() if dialect_of(db) == "postgresql" else utcnow()


@dataclass(frozen=True)
class Claim:
    turn_id: int
    attempt: int  # the fence: a store is accepted only while `attempts` still equals it
    working: TurnState
    stage_attempt: int = 1
    trajectory_id: int | None = None


# What a stage reads of its own turn: returned by the claim itself, so it costs no second read.
# `has_builds`: the build stage published builds for it (the evaluation reads them only then).
CLAIMED_COLUMNS = (Turn.attempts, Turn.stage_attempts, Turn.trajectory_id, Turn.turn_index, Turn.raw_response,
                   Turn.finish_reason, Turn.code, Turn.degenerate, Turn.no_code_reason,
                   exists().where(TurnBuild.turn_id == Turn.id).label("has_builds"))
CLAIMED_NAMES = tuple(column.key for column in CLAIMED_COLUMNS)  # read once: an ORM attribute's name is a lookup


def claim(db: Executor, turn_id: int, waiting: TurnState, working: TurnState, worker: str, lease_seconds: float) -> Claim | None:
    """Move a turn from its waiting to its working state; None when another delivery got there first."""
    dialect = dialect_of(db)
    row = db.execute(_claiming(dialect, waiting, working), _claim_params(dialect, turn_id, worker, lease_seconds)).first()
    return None if row is None else _claim_of_row(row._asdict(), turn_id, working)


def _state_is(state: TurnState):
    """`turns.state = state` in a form no index serves, for statements that find their turn by id:
    from statistics taken before a run's turns arrived, Postgres costs a scan of the turns in one
    state as cheap as the primary key, and a claim would walk a whole stage's backlog
    (tests/test_query_plans.py)."""
    return Turn.state.concat(literal_column("''")) == state.value


# Statements are built once per process (by dialect and states) and executed with parameters:
# building them costs more CPU than the round trip they make.

def _clock_param(dialect: str, column):
    """The clock of a statement built once and cached: the database's on Postgres (as `clock`),
    on SQLite the parameter `now`, bound per execution (a value written into it would stay)."""
    return func.now() if dialect == "postgresql" else bindparam("now", type_=column.type)


@lru_cache(maxsize=None)
def _claiming(dialect: str, waiting: TurnState, working: TurnState):
    postgres = dialect == "postgresql"
    now = _clock_param(dialect, Turn.updated_at)
    return (
        update(Turn)
        .where(Turn.id == bindparam("turn_id"), _state_is(waiting))
        .values(
            state=working.value,
            attempts=Turn.attempts + 1,
            stage_attempts=Turn.stage_attempts + 1,
            claimed_by=bindparam("worker", type_=String()),
            lease_expires_at=now + bindparam("lease", type_=Interval()) if postgres else bindparam("lease_until", type_=Turn.lease_expires_at.type),
            updated_at=now,
        )
        .returning(*CLAIMED_COLUMNS)
    )


def _claim_params(dialect: str, turn_id: int, worker: str, lease_seconds: float) -> dict[str, Any]:
    lease = timedelta(seconds=lease_seconds)
    if dialect == "postgresql":
        return {"turn_id": turn_id, "worker": worker, "lease": lease}
    now = utcnow()
    return {"turn_id": turn_id, "worker": worker, "now": now, "lease_until": now + lease}


def _claim_of_row(row: dict[str, Any], turn_id: int, working: TurnState) -> Claim:
    return Claim(turn_id, row["attempts"], working, row["stage_attempts"], row["trajectory_id"])


def claim_with_context(db: Executor, turn_id: int, waiting: TurnState, working: TurnState, worker: str,
                       lease_seconds: float) -> tuple[Claim, dict[str, Any], list[dict[str, Any]]] | None:
    """Claim a turn and read what its stage needs: the claim, the turn's own columns
    (CLAIMED_COLUMNS) and the rows of `context_rows`; None when the turn was not waiting.

    On Postgres this is one statement (the claim is a data-modifying CTE the read joins), so claim
    and read commit or fail together; SQLite has no such CTE and takes two."""
    dialect = dialect_of(db)
    params = _claim_params(dialect, turn_id, worker, lease_seconds)
    if dialect != "postgresql":
        row = db.execute(_claiming(dialect, waiting, working), params).first()
        if row is None:
            return None
        turn = row._asdict()
        return _claim_of_row(turn, turn_id, working), turn, context_rows(db, turn["trajectory_id"], turn["turn_index"])
    rows = driver_rows(db, _claiming_with_context(waiting, working), params)
    if not rows:
        return None
    turn = {name: rows[0][name] for name in CLAIMED_NAMES}
    return _claim_of_row(turn, turn_id, working), turn, rows


@lru_cache(maxsize=None)
def _claiming_with_context(waiting: TurnState, working: TurnState):
    claimed = _claiming("postgresql", waiting, working).cte("claimed")
    trajectories = claimed.join(Trajectory.__table__, Trajectory.id == claimed.c.trajectory_id)
    return _context_select(trajectories, claimed.c.trajectory_id, claimed.c.turn_index, claimed.c)


def context_rows(db: Executor, trajectory_id: int, before_index: int) -> list[dict[str, Any]]:
    """A trajectory's run config (as JSON text: what a stage parses it from, once per run) and
    problem, with its turns before `before_index` in one read: a row per earlier turn, oldest first
    (earlier_* columns; one row with them NULL when there is none)."""
    statement = _context_by_id()
    return [row._asdict() for row in db.execute(statement, {"trajectory_id": trajectory_id, "before_index": before_index})]


@lru_cache(maxsize=1)
def _context_by_id():
    return _context_select(Trajectory.__table__, bindparam("trajectory_id"), bindparam("before_index"))


EARLIER = aliased(Turn, name="earlier")


def _context_select(trajectories, trajectory_id, before_index, *leading):
    """`trajectories`: the FROM item that holds the trajectory row (with the claim, when there is one)."""
    return (
        select(*leading, Trajectory.run_id, Trajectory.sample_index, cast(Run.config, Text).label("config"), Problem.name, Problem.level, Problem.source,
               Problem.origin, Problem.prompt, EARLIER.turn_index.label("earlier_index"), EARLIER.cleaned_response.label("earlier_answer"),
               EARLIER.feedback.label("earlier_feedback"), EARLIER.reward.label("earlier_reward"))
        .select_from(
            trajectories.join(Run, Run.id == Trajectory.run_id)
            .join(Problem, Problem.id == Trajectory.problem_id)
            .outerjoin(EARLIER, and_(EARLIER.trajectory_id == Trajectory.id, EARLIER.turn_index < before_index))
        )
        .where(Trajectory.id == trajectory_id)
        .order_by(EARLIER.turn_index)
    )


def _held(db: Executor, claim: Claim, lease_expired: bool):
    """`claim` still holds the turn; with `lease_expired`, its lease has also run out at this very
    moment (so a lease its worker renewed after someone looked is never taken over)."""
    conditions = [Turn.id == claim.turn_id, _state_is(claim.working), Turn.attempts == claim.attempt]
    if lease_expired:
        conditions.append(Turn.lease_expires_at < clock(db))
    return and_(*conditions)


def release_claim(db: Executor, claim: Claim, waiting: TurnState, lease_expired: bool = False) -> bool:
    """Hand a claimed turn back to its waiting state (to be claimed again), if `claim` still holds it."""
    result = db.execute(
        update(Turn)
        .where(_held(db, claim, lease_expired))
        .values(state=waiting.value, lease_expires_at=None, claimed_by=None, updated_at=clock(db))
    )
    return result.rowcount == 1


def lock_trajectory(db: Executor, trajectory_id: int):
    """Lock the trajectory row; its (status, run_id). Every path that ends a trajectory or adds a
    turn to it takes this lock first (and before any turn row), so cancelling and advancing cannot
    interleave."""
    return db.execute(
        select(Trajectory.status, Trajectory.run_id).where(Trajectory.id == trajectory_id).with_for_update()
    ).one()


def store(db: Executor, claim: Claim, next_state: TurnState, lease_expired: bool = False, **values: Any) -> bool:
    """Store a stage's result and move on, only if `claim` still holds the turn (and, with
    `lease_expired`, only if its lease has run out)."""
    dialect = dialect_of(db)
    statement = _storing(dialect, claim.working, next_state, lease_expired, tuple(sorted(values)))
    params = {"turn_id": claim.turn_id, "attempt": claim.attempt, "now": utcnow(), **{f"v_{k}": v for k, v in values.items()}}
    return driver_rowcount(db, statement, params) == 1


@lru_cache(maxsize=256)
def _storing(dialect: str, working: TurnState, next_state: TurnState, lease_expired: bool, columns: tuple[str, ...]):
    now = _clock_param(dialect, Turn.updated_at)
    held = [Turn.id == bindparam("turn_id"), _state_is(working), Turn.attempts == bindparam("attempt")]
    if lease_expired:
        held.append(Turn.lease_expires_at < now)
    return (
        update(Turn)
        .where(*held)
        .values(state=next_state.value, stage_attempts=0, lease_expires_at=None, updated_at=now,
                **{column: bindparam(f"v_{column}", type_=getattr(Turn, column).type) for column in columns})
        .execution_options(synchronize_session=False)
    )


def _done_params(claim: Claim, trajectory_id: int, values: dict[str, Any]) -> dict[str, Any]:
    return {"turn_id": claim.turn_id, "attempt": claim.attempt, "trajectory": trajectory_id, **{f"v_{k}": v for k, v in values.items()}}


def store_done(db: Executor, claim: Claim, trajectory_id: int, next_index: int | None, **values: Any) -> tuple[bool, str | None, int | None]:
    """Store an evaluation (the turn done), the trajectory row locked before the turn row as
    everywhere, and with `next_index` add the trajectory's next turn, pending, if it still runs:
    (stored, the trajectory's status, the new turn's id or None). On Postgres one statement;
    elsewhere up to three, in the caller's transaction."""
    if dialect_of(db) != "postgresql":
        status, _run_id = lock_trajectory(db, trajectory_id)
        if not store(db, claim, TurnState.done, **values):
            return False, status, None
        adding = next_index is not None and status == TrajectoryStatus.running.value
        return True, status, (add_next(db, trajectory_id, next_index) if adding else None)
    params = {**_done_params(claim, trajectory_id, values), "next_index": next_index}
    [row] = driver_rows(db, _storing_done(claim.working, tuple(sorted(values)), next_index is not None), params)
    return bool(row["stored"]), row["status"], row["next_id"]


def store_last(db: Executor, claim: Claim, trajectory_id: int, returns: list[float], **values: Any) -> tuple[bool, bool]:
    """Store the evaluation of a trajectory's last turn (the turn done) and end the trajectory as
    completed, if it still runs, with `returns` (each turn's discounted return, by turn index):
    (stored, ended). Locks as `store_done`; on Postgres one statement, elsewhere up to three, in
    the caller's transaction (which should also complete the run: db.runs.complete_if_finished)."""
    if dialect_of(db) != "postgresql":
        status, _run_id = lock_trajectory(db, trajectory_id)
        if not store(db, claim, TurnState.done, **values):
            return False, False
        return True, status == TrajectoryStatus.running.value and finish_trajectory(db, trajectory_id, TrajectoryStatus.completed, returns)
    # the turn's own return is set by its store: one statement cannot update its row twice
    params = {**_done_params(claim, trajectory_id, values), **_returns_params(returns[:-1], _trajectory_return(TrajectoryStatus.completed, returns)),
              "own_return": returns[-1]}
    [row] = driver_rows(db, _storing_last(claim.working, tuple(sorted(values))), params)
    return bool(row["stored"]), bool(row["ended"])


def _storing_turn_done(working: TurnState, columns: tuple[str, ...], own_return: bool = False):
    """(the trajectory's status, read under its row lock; the CTE storing the turn done while that
    status is known, with `own_return` its return too if the trajectory runs): the head of
    `store_done`'s and `store_last`'s statements. The lock is a CTE read by the update's condition,
    so it is taken before the turn row is. (No parameter is named after a column: in an UPDATE that
    would add it to the SET clause.)"""
    locked = select(Trajectory.status).where(Trajectory.id == bindparam("trajectory")).with_for_update().cte("locked")
    status = select(locked.c.status).scalar_subquery()
    values = {column: bindparam(f"v_{column}", type_=getattr(Turn, column).type) for column in columns}
    if own_return:
        values["return_"] = case((status == TrajectoryStatus.running.value, bindparam("own_return", type_=Float())), else_=null())
    stored = (
        update(Turn)
        .where(Turn.id == bindparam("turn_id"), _state_is(working), Turn.attempts == bindparam("attempt"), status.is_not(None))
        .values(state=TurnState.done.value, stage_attempts=0, lease_expires_at=None, updated_at=func.now(), **values)
        .returning(Turn.id)
        .cte("stored")
    )
    return status, stored


def _count(cte):
    return select(func.count()).select_from(cte).scalar_subquery()


@lru_cache(maxsize=64)
def _storing_done(working: TurnState, columns: tuple[str, ...], adding: bool):
    status, stored = _storing_turn_done(working, columns)
    next_id = null()
    if adding:
        added = (
            insert(Turn)
            .from_select(
                ["trajectory_id", "turn_index", "state", "attempts", "stage_attempts", "created_at", "updated_at"],
                select(bindparam("trajectory", type_=Integer()), bindparam("next_index", type_=Integer()), literal(TurnState.pending.value),
                       literal(0), literal(0), func.now(), func.now())
                .select_from(stored)
                .where(status == TrajectoryStatus.running.value),
            )
            .returning(Turn.id)
            .cte("added")
        )
        next_id = select(added.c.id).scalar_subquery()
    return select(_count(stored).label("stored"), status.label("status"), next_id.label("next_id"))


@lru_cache(maxsize=64)
def _storing_last(working: TurnState, columns: tuple[str, ...]):
    _status, stored = _storing_turn_done(working, columns, own_return=True)
    ended, returned = _ending(TrajectoryStatus.completed, exists(select(stored.c.id)))
    # the earlier turns' count is read only so that the statement includes their update
    return select(_count(stored).label("stored"), _count(ended).label("ended"), _count(returned).label("returned"))


def add_next(db: Executor, trajectory_id: int, turn_index: int) -> int:
    return db.scalar(
        insert(Turn)
        .values(trajectory_id=trajectory_id, turn_index=turn_index, state=TurnState.pending.value, updated_at=clock(db))
        .returning(Turn.id)
    )


def add_first_turns(db: Executor, trajectory_ids: list[int]) -> list[int]:
    """Turn 0 of each trajectory, pending, in one statement; their ids in the order given."""
    if not trajectory_ids:
        return []
    now = db_now(db)
    return db.scalars(
        insert(Turn).returning(Turn.id, sort_by_parameter_order=True),
        [{"trajectory_id": t, "turn_index": 0, "state": TurnState.pending.value, "updated_at": now, "created_at": now} for t in trajectory_ids],
    ).all()


def finish_trajectory(db: Executor, trajectory_id: int, status: TrajectoryStatus, returns: list[float] | None) -> bool:
    """End a running trajectory; `returns` are its turns' discounted returns by turn index (of the
    scored turns only, for a failed one, which has no return of its own). False when it had already
    ended (cancelled meanwhile, say). Its row is updated (so locked) before any of its turns; on
    Postgres both in one statement."""
    returns = returns or []
    params = {"trajectory": trajectory_id, "now": utcnow(), **_returns_params(returns, _trajectory_return(status, returns))}
    if dialect_of(db) == "postgresql":
        [row] = driver_rows(db, _finishing(status), params)
        return row["ended"] == 1
    if db.execute(_ending_update("sqlite", status), params).rowcount != 1:
        return False
    if returns:
        db.execute(update(Turn).where(Turn.trajectory_id == trajectory_id, Turn.turn_index.in_(range(len(returns))))
                   .values(return_=case(dict(enumerate(returns)), value=Turn.turn_index)))
    return True


def _trajectory_return(status: TrajectoryStatus, returns: list[float]) -> float | None:
    """A completed trajectory's return is its first turn's; a failed or cancelled one has none."""
    return returns[0] if returns and status is TrajectoryStatus.completed else None


def _returns_params(returns: list[float], trajectory_return: float | None) -> dict[str, Any]:
    """`returns` (by turn index) as the arrays `_ending` reads, and the trajectory's own."""
    return {"return_indexes": list(range(len(returns))), "return_values": [float(r) for r in returns], "trajectory_return": trajectory_return}


@lru_cache(maxsize=8)
def _ending_update(dialect: str, status: TrajectoryStatus):
    now = _clock_param(dialect, Trajectory.finished_at)
    return (
        update(Trajectory)
        .where(Trajectory.id == bindparam("trajectory"), Trajectory.status == TrajectoryStatus.running.value)
        .values(status=status.value, finished_at=now, return_=bindparam("trajectory_return", type_=Float()))
    )


def _ending(status: TrajectoryStatus, *conditions):
    """The CTEs of a Postgres statement that ends the trajectory :trajectory if it still runs (and
    `conditions` hold), `ended`, and that then gives its turns their returns (:return_indexes,
    :return_values), `returned`: the trajectory row is locked before its turns'."""
    ended = _ending_update("postgresql", status).where(*conditions).returning(Trajectory.id).cte("ended")
    given = func.unnest(cast(bindparam("return_indexes"), ARRAY(Integer())), cast(bindparam("return_values"), ARRAY(Float()))) \
        .table_valued("turn_index", "value").render_derived(name="given")
    returned = (
        update(Turn)
        .where(Turn.trajectory_id.in_(select(ended.c.id)), Turn.turn_index == given.c.turn_index)
        .values(return_=given.c.value)
        .returning(Turn.id)
        .cte("returned")
    )
    return ended, returned


@lru_cache(maxsize=8)
def _finishing(status: TrajectoryStatus):
    ended, returned = _ending(status)
    # the turns' count is read only so that the statement includes their update
    return select(_count(ended).label("ended"), _count(returned).label("returned"))


def rewards_and_config(db: Executor, trajectory_id: int) -> tuple[list[tuple[str, float | None]], dict[str, Any]]:
    """(state, reward) of a trajectory's turns in order, and its run's config, in one query."""
    rows = db.execute(
        select(Turn.state, Turn.reward, Run.config)
        .join(Trajectory, Trajectory.id == Turn.trajectory_id).join(Run, Run.id == Trajectory.run_id)
        .where(Turn.trajectory_id == trajectory_id).order_by(Turn.turn_index)
    ).all()
    return [(state, reward) for state, reward, _ in rows], (rows[0][2] if rows else {})


def expired_leases(db: Executor, now: datetime, limit: int | None = None) -> list[Claim]:
    """The claims of working turns whose lease ran out, oldest lease first (index ix_turns_working_lease)."""
    return [claim for claim, _holder in _working_claims(db, Turn.lease_expires_at < now, limit)]


HELD_COLUMNS = (Turn.id, Turn.attempts, Turn.state, Turn.stage_attempts, Turn.trajectory_id, Turn.claimed_by)


def held_claims(db: Executor, holder_prefix: str) -> list[tuple[Claim, str | None]]:
    """(claim, holder) of the working turns whose holder starts with `holder_prefix` (a host's
    claims). Working turns are as many as the workers' slots."""
    return _working_claims(db, Turn.claimed_by.startswith(holder_prefix, autoescape=True))


def held_claim(db: Executor, turn_id: int) -> list[tuple[Claim, str | None]]:
    """(claim, holder) of the turn if a stage works on it, else nothing: what a delivery that could
    not claim its turn looks up. That is most of what a duplicate delivery costs, so the statement
    is compiled once and run on the driver (built each time, it cost twice the claim)."""
    return [_held_of_row(row) for row in driver_rows(db, _held_by_id(), {"turn_id": turn_id})]


@lru_cache(maxsize=1)
def _held_by_id():
    return _working(Turn.id == bindparam("turn_id"))


def _working(condition):
    return select(*HELD_COLUMNS).where(in_states(Turn.state, WORKING_TURN_STATES), condition)


def _held_of_row(row: dict[str, Any]) -> tuple[Claim, str | None]:
    claim = Claim(row["id"], row["attempts"], TurnState(row["state"]), row["stage_attempts"], row["trajectory_id"])
    return claim, row["claimed_by"]


def _working_claims(db: Executor, condition, limit: int | None = None) -> list[tuple[Claim, str | None]]:
    rows = db.execute(_working(condition).order_by(Turn.lease_expires_at).limit(limit))
    return [_held_of_row(row._asdict()) for row in rows]


def waiting_since(db: Executor, before: datetime, limit: int | None = None) -> list[tuple[int, str]]:
    """(id, state) of turns waiting for a stage since `before` or longer, longest first (index
    ix_turns_waiting_since)."""
    rows = db.execute(
        select(Turn.id, Turn.state).where(in_states(Turn.state, WAITING_TURN_STATES), Turn.updated_at <= before).order_by(Turn.updated_at).limit(limit)
    )
    return [tuple(row) for row in rows]


def waiting_in_trajectory(db: Executor, trajectory_id: int, from_index: int) -> list[tuple[int, str]]:
    """(id, state) of the trajectory's turns from `from_index` on that wait for a stage."""
    rows = db.execute(select(Turn.id, Turn.state).where(Turn.trajectory_id == trajectory_id, Turn.turn_index >= from_index,
                                                            in_states(Turn.state, WAITING_TURN_STATES)))
    return [tuple(row) for row in rows]


def live_leases(db: Executor, now: datetime, limit: int | None = None) -> list[tuple[int, str, datetime]]:
    """(id, state, lease end) of working turns whose lease still runs: their worker may be alive,
    so the reconciler waits."""
    rows = db.execute(
        select(Turn.id, Turn.state, Turn.lease_expires_at).where(in_states(Turn.state, WORKING_TURN_STATES), Turn.lease_expires_at >= now)
        .order_by(Turn.lease_expires_at).limit(limit)
    )
    return [tuple(row) for row in rows]


def cancel_open(db: Executor, trajectory_ids: list[int]) -> int:
    result = db.execute(
        update(Turn)
        .where(Turn.trajectory_id.in_(trajectory_ids), Turn.state.not_in([s.value for s in FINAL_TURN_STATES]))
        .values(state=TurnState.cancelled.value, lease_expires_at=None, updated_at=clock(db))
    )
    return result.rowcount


def with_raw_response(session: Session, run_id: int) -> list[Turn]:
    return list(
        session.scalars(
            select(Turn).join(Trajectory, Trajectory.id == Turn.trajectory_id).where(Trajectory.run_id == run_id, Turn.raw_response.is_not(None)).order_by(Turn.id)
        )
    )


def update_cleaning(db: Executor, turn_id: int, values: dict[str, Any]) -> None:
    """Replace a turn's cleaning columns (never its raw response)."""
    db.execute(update(Turn).where(Turn.id == turn_id).values(updated_at=db_now(db), **values))


def extend_lease(db: Executor, claim: Claim, lease_seconds: float) -> bool:
    result = db.execute(
        update(Turn)
        .where(Turn.id == claim.turn_id, _state_is(claim.working), Turn.attempts == claim.attempt)
        .values(lease_expires_at=clock(db) + timedelta(seconds=lease_seconds))
    )
    return result.rowcount == 1

"""The turn state machine on the real Postgres: claims are exclusive, stale workers cannot store."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select, update

from db import builds
from db import runs as run_queries
from db import turns as turn_queries
from db.migrate import upgrade
from db.models import Turn, TurnState
from db.session import session_scope, transaction_scope
from orchestrator.settings import to_sqlalchemy_url

pytestmark = pytest.mark.integration

PROBLEM = run_queries.NewProblem("1_ReLU", 1, "source", "0" * 64, None)


@pytest.fixture(scope="module")
def url(postgres_url):
    sqlalchemy_url = to_sqlalchemy_url(postgres_url)
    upgrade(sqlalchemy_url)
    return sqlalchemy_url


@pytest.fixture
def turn_id(url):
    with session_scope(url) as session:
        _, [turn_id] = run_queries.create(session, {"test": True}, [PROBLEM], samples=1)
    return turn_id


def test_second_delivery_cannot_claim(url, turn_id):
    with session_scope(url) as session:
        first = turn_queries.claim(session, turn_id, TurnState.pending, TurnState.generating, "w1", 60)
    with session_scope(url) as session:
        second = turn_queries.claim(session, turn_id, TurnState.pending, TurnState.generating, "w2", 60)
    assert first is not None and first.attempt == 1
    assert second is None


def test_store_needs_the_latest_claim(url, turn_id):
    with session_scope(url) as session:
        stale = turn_queries.claim(session, turn_id, TurnState.pending, TurnState.generating, "w1", 60)
    with session_scope(url) as session:
        assert turn_queries.release_claim(session, stale, TurnState.pending)  # what the reconciler does
    with session_scope(url) as session:
        fresh = turn_queries.claim(session, turn_id, TurnState.pending, TurnState.generating, "w2", 60)
    with session_scope(url) as session:
        assert not turn_queries.store(session, stale, TurnState.generated, raw_response="late")
        assert turn_queries.store(session, fresh, TurnState.generated, raw_response="fresh")
    with session_scope(url) as session:
        turn = session.get(Turn, turn_id)
        assert (turn.state, turn.raw_response, turn.attempts, turn.stage_attempts) == ("generated", "fresh", 2, 0)


def test_turn_index_is_unique_per_trajectory(url, turn_id):
    from sqlalchemy.exc import IntegrityError

    with session_scope(url) as session:
        trajectory_id = session.scalar(select(Turn.trajectory_id).where(Turn.id == turn_id))
    with pytest.raises(IntegrityError), session_scope(url) as session:
        turn_queries.add_next(session, trajectory_id, 0)


def test_run_creation_is_one_transaction(url):
    with pytest.raises(RuntimeError), session_scope(url) as session:
        run_id, _ = run_queries.create(session, {"test": "rollback"}, [PROBLEM], samples=2)
        raise RuntimeError("crash before commit")
    with session_scope(url) as session:
        assert run_queries.get(session, run_id) is None


def test_a_cancelled_trajectory_is_not_ended_again(url, turn_id):
    from db.models import TrajectoryStatus

    with session_scope(url) as session:
        trajectory_id = session.scalar(select(Turn.trajectory_id).where(Turn.id == turn_id))
        assert turn_queries.finish_trajectory(session, trajectory_id, TrajectoryStatus.cancelled, None)
    with session_scope(url) as session:
        assert not turn_queries.finish_trajectory(session, trajectory_id, TrajectoryStatus.completed, [1.0])
        assert turn_queries.lock_trajectory(session, trajectory_id).status == "cancelled"
    with session_scope(url) as session:
        assert session.scalar(select(Turn.return_).where(Turn.id == turn_id)) is None  # the returns came with an end that did not happen


def test_a_completed_trajectory_ends_with_its_turns_returns(url, turn_id):
    from db.models import Trajectory, TrajectoryStatus

    with session_scope(url) as session:
        trajectory_id = session.scalar(select(Turn.trajectory_id).where(Turn.id == turn_id))
        assert turn_queries.finish_trajectory(session, trajectory_id, TrajectoryStatus.completed, [0.75])
    with session_scope(url) as session:
        assert session.scalar(select(Turn.return_).where(Turn.id == turn_id)) == 0.75
        assert session.execute(select(Trajectory.status, Trajectory.return_).where(Trajectory.id == trajectory_id)).one() == ("completed", 0.75)


def test_baseline_put_twice_keeps_the_latest(url):
    from db import baselines

    for median in (2.0, 1.5):
        with session_scope(url) as session:
            baselines.put(session, "f" * 64, "device", median, 0.1, 20, {"device": "cpu"})
    with session_scope(url) as session:
        assert baselines.get(session, "f" * 64, "device").median_ms == 1.5


def test_runs_share_a_problem_row_and_a_later_source_fills_in_what_it_knows(url):
    from dataclasses import replace

    from db.models import Problem, Trajectory

    known, other = replace(PROBLEM, name="2_Known", source_hash="1" * 64), replace(PROBLEM, name="3_Other", source_hash="2" * 64)
    with session_scope(url) as session:
        first, _ = run_queries.create(session, {"test": True}, [other, known], samples=2)
    with session_scope(url) as session:  # the same problem again, from a source that knows its key
        second, _ = run_queries.create(session, {"test": True}, [replace(known, problem_key="level1/2", kernelbench_id=2)], samples=1)
    with session_scope(url) as session:
        trajectories = session.execute(
            select(Trajectory.run_id, Trajectory.sample_index, Problem.id, Problem.name, Problem.problem_key)
            .join(Problem, Problem.id == Trajectory.problem_id).where(Trajectory.run_id.in_([first, second])).order_by(Trajectory.id)
        ).all()
    assert [(t.run_id, t.name, t.sample_index) for t in trajectories] == [
        (first, "3_Other", 0), (first, "3_Other", 1), (first, "2_Known", 0), (first, "2_Known", 1), (second, "2_Known", 0)]
    assert len({t.id for t in trajectories if t.name == "2_Known"}) == 1  # one row, shared
    assert {t.problem_key for t in trajectories if t.name == "2_Known"} == {"level1/2"}


def _evaluating(url, samples: int) -> tuple[int, list[turn_queries.Claim]]:
    """A new run whose trajectories' first turns are claimed for evaluation: (run id, their claims)."""
    with session_scope(url) as session:
        run_id, turn_ids = run_queries.create(session, {"test": True}, [PROBLEM], samples=samples)
    with session_scope(url) as session:
        return run_id, [turn_queries.claim(session, t, TurnState.pending, TurnState.evaluating, "w1", 60) for t in turn_ids]


def _ended(url, claim: turn_queries.Claim) -> tuple:
    from db.models import Trajectory

    with session_scope(url) as session:
        return session.execute(select(Trajectory.status, Trajectory.return_, Turn.state, Turn.return_)
                               .join(Turn, Turn.trajectory_id == Trajectory.id).where(Turn.id == claim.turn_id)).one()


def test_the_last_turn_stored_ends_its_trajectory_with_the_returns(url):
    from db.models import Trajectory

    _run_id, [claim] = _evaluating(url, 1)
    with session_scope(url) as session:  # two earlier turns, scored: returns reach every turn of the trajectory
        for index in (1, 2):
            session.add(Turn(trajectory_id=claim.trajectory_id, turn_index=index, state=TurnState.done.value))
    with session_scope(url) as session:  # the claimed turn plays the last one
        session.execute(update(Turn).where(Turn.id == claim.turn_id).values(turn_index=3))
    with transaction_scope(url) as connection:
        assert turn_queries.store_last(connection, claim, claim.trajectory_id, [0.9, 0.8, 0.7, 0.5], reward=0.5) == (True, True)
    with session_scope(url) as session:
        returns = session.execute(select(Turn.turn_index, Turn.return_).where(Turn.trajectory_id == claim.trajectory_id)
                                  .order_by(Turn.turn_index)).all()
        trajectory = session.execute(select(Trajectory.status, Trajectory.return_).where(Trajectory.id == claim.trajectory_id)).one()
    assert [tuple(r) for r in returns] == [(1, 0.8), (2, 0.7), (3, 0.5)] and tuple(trajectory) == ("completed", 0.9)


def test_the_last_turn_of_a_trajectory_ended_meanwhile_is_stored_without_returns(url):
    from db.models import Trajectory

    _run_id, [claim] = _evaluating(url, 1)
    with session_scope(url) as session:
        session.execute(update(Trajectory).where(Trajectory.id == claim.trajectory_id).values(status="failed"))
    with transaction_scope(url) as connection:
        assert turn_queries.store_last(connection, claim, claim.trajectory_id, [0.5], reward=0.5) == (True, False)
    assert tuple(_ended(url, claim)) == ("failed", None, "done", None)


def test_two_trajectories_ending_at_once_complete_their_run(url):
    """The second end waits for the first's lock on the run row, and its check, a later statement,
    then reads the first's end: had both checked at once, each would see the other running and
    the run would never complete."""
    from db.models import Run

    run_id, [first, second] = _evaluating(url, 2)
    with transaction_scope(url) as connection:
        assert turn_queries.store_last(connection, first, first.trajectory_id, [1.0], reward=1.0) == (True, True)
        assert not run_queries.complete_if_finished(connection, run_id)  # the second trajectory still runs
        completed = []

        def end_second() -> None:
            with transaction_scope(url) as other:
                turn_queries.store_last(other, second, second.trajectory_id, [0.0], reward=0.0)
                completed.append(run_queries.complete_if_finished(other, run_id))

        ending = threading.Thread(target=end_second)
        ending.start()
        _wait_for_a_lock_wait(url)
    ending.join(timeout=30)
    assert completed == [True]
    with session_scope(url) as session:
        assert session.scalar(select(Run.status).where(Run.id == run_id)) == "completed"


def _wait_for_a_lock_wait(url, timeout_s: float = 30.0) -> None:
    from sqlalchemy import text

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with session_scope(url) as session:
            if session.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")):
                return
        time.sleep(0.05)
    raise AssertionError("the second end never waited for the first's lock on the run row")


@pytest.mark.parametrize("published", [True, False])
def test_the_evaluate_claim_says_whether_builds_were_published_for_the_turn(url, turn_id, published):
    """The evaluation reads a turn's builds only when the claim says there are some (most answers
    have nothing to build ahead, and reading none cost a transaction per evaluation)."""
    with session_scope(url) as session:
        _, [other_turn] = run_queries.create(session, {"test": True}, [PROBLEM], samples=1)
        session.execute(update(Turn).where(Turn.id == turn_id).values(state=TurnState.built.value))
        for turn in [other_turn, turn_id] if published else [other_turn]:  # another turn's builds are not this one's
            builds.save(session, turn, [(f"key-{turn}", {"ok": True}, b"module")])
    with transaction_scope(url) as db:
        claim, turn, _rows = turn_queries.claim_with_context(db, turn_id, TurnState.built, TurnState.evaluating, "w1", 60)
    assert claim.attempt == 1 and turn["has_builds"] is published

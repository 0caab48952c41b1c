"""The turn state machine on the real Postgres: claims are exclusive, stale workers cannot store."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from db import runs as run_queries
from db import turns as turn_queries
from db.migrate import upgrade
from db.models import Turn, TurnState
from db.session import session_scope
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
        assert not turn_queries.finish_trajectory(session, trajectory_id, TrajectoryStatus.completed, {0: 1.0})
        assert turn_queries.lock_trajectory(session, trajectory_id).status == "cancelled"
    with session_scope(url) as session:
        assert session.scalar(select(Turn.return_).where(Turn.id == turn_id)) is None  # the returns came with an end that did not happen


def test_a_completed_trajectory_ends_with_its_turns_returns(url, turn_id):
    from db.models import Trajectory, TrajectoryStatus

    with session_scope(url) as session:
        trajectory_id = session.scalar(select(Turn.trajectory_id).where(Turn.id == turn_id))
        assert turn_queries.finish_trajectory(session, trajectory_id, TrajectoryStatus.completed, {0: 0.75})
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

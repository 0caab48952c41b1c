"""db.session.driver_rows on the real Postgres: the claim it runs straight on the driver reads what
SQLAlchemy's own execution reads, value for value and type for type, and a lost connection is
raised as SQLAlchemy raises it, with the next claim on a fresh connection."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from db import runs as run_queries
from db import turns as turn_queries
from db.migrate import upgrade
from db.models import TurnState
from db.session import session_scope, statement_scope
from orchestrator.settings import to_sqlalchemy_url
from tests.cluster import rows

pytestmark = pytest.mark.integration

PROBLEM = run_queries.NewProblem("1_ReLU", 1, "source", "1" * 64, "a/1_ReLU.py")
CONFIG = {"gamma": 0.4, "max_turns": 3, "nested": {"list": [1, 2.5, None, "x"], "flag": True}}


@pytest.fixture(scope="module")
def url(postgres_url):
    # a URL of its own: an engine, and so a pool, no other test shares
    sqlalchemy_url = to_sqlalchemy_url(postgres_url) + "?application_name=kturn_driver_rows_test"
    upgrade(sqlalchemy_url)
    return sqlalchemy_url


@pytest.fixture
def runs_made(db):
    """The ids of the runs a test makes, deleted after it: their claimed turns would otherwise be
    handed on by a later module's reconcile, into queues other tests count."""
    made: list[int] = []
    yield made
    with db.begin() as connection:
        connection.execute(text("DELETE FROM runs WHERE id = ANY(:ids)"), {"ids": made})


def second_turns(url: str, db, runs_made: list[int], samples: int) -> list[int]:
    """Each trajectory's turn 1, pending, after a turn 0 that was scored."""
    with session_scope(url) as session:
        run_id, first_turns = run_queries.create(session, CONFIG, [PROBLEM], samples=samples)
    runs_made.append(run_id)
    with db.begin() as connection:
        trajectories = connection.execute(text("""UPDATE turns SET state = 'done', reward = 0.25, cleaned_response = 'answer',
                                                  feedback = 'it compiled' WHERE id = ANY(:ids) RETURNING trajectory_id"""),
                                          {"ids": first_turns}).scalars().all()
        return [turn_queries.add_next(connection, trajectory, 1) for trajectory in trajectories]


def test_the_claim_reads_what_sqlalchemy_reads(url, db, runs_made):
    ours, theirs = second_turns(url, db, runs_made, samples=2)
    with statement_scope(url) as connection:
        _claim, _turn, driver = turn_queries.claim_with_context(connection, ours, TurnState.pending, TurnState.generating, "w", 60)
        statement = turn_queries._claiming_with_context(TurnState.pending, TurnState.generating)
        alchemy = [row._asdict() for row in connection.execute(statement, {"turn_id": theirs, "worker": "w", "lease": timedelta(seconds=60)})]
    per_trajectory = {"trajectory_id", "sample_index"}
    typed = lambda rows_: [{k: (type(v), v) for k, v in row.items() if k not in per_trajectory} for row in rows_]  # noqa: E731
    assert typed(driver) == typed(alchemy)
    assert json.loads(driver[0]["config"]) == CONFIG and driver[0]["earlier_reward"] == 0.25 and driver[0]["earlier_answer"] == "answer"


def test_a_lost_connection_is_raised_as_sqlalchemys_and_the_next_claim_gets_a_fresh_one(url, db, runs_made):
    [turn_id] = second_turns(url, db, runs_made, samples=1)
    with statement_scope(url) as one, statement_scope(url) as another:  # two connections in the pool, both cut below
        backends = [c.execute(text("SELECT pg_backend_pid()")).scalar() for c in (one, another)]
    rows(db, "SELECT pg_terminate_backend(pid) AS cut FROM unnest(CAST(:pids AS int[])) AS pid", pids=backends)
    with pytest.raises(OperationalError) as raised:
        with statement_scope(url) as connection:  # the pool hands out a connection that was cut
            turn_queries.claim_with_context(connection, turn_id, TurnState.pending, TurnState.generating, "w", 60)
    assert raised.value.connection_invalidated  # and with it the other one: the next claim gets a fresh connection
    with statement_scope(url) as connection:
        claimed = turn_queries.claim_with_context(connection, turn_id, TurnState.pending, TurnState.generating, "w", 60)
    assert claimed is not None and claimed[0].attempt == 1


def test_a_store_on_the_driver_writes_what_sqlalchemy_writes(url, db, runs_made):
    """JSON values (None among them, which SQLAlchemy stores as JSON null), text, numbers: the
    store run on the driver and the same statement run by SQLAlchemy leave the same row; and a store
    whose claim no longer holds the turn changes nothing."""
    ours, theirs = second_turns(url, db, runs_made, samples=2)
    values = {"prompt_messages": [{"role": "user", "content": "é ∑"}], "raw_response": "answer", "finish_reason": None,
              "generation_meta": {"latency_s": 0.5, "nested": [1, None, "x"]}, "prompt_tokens": 7, "loop_onset": None}
    with statement_scope(url) as connection:
        claims = [turn_queries.claim_with_context(connection, turn, TurnState.pending, TurnState.generating, "w", 60)[0] for turn in (ours, theirs)]
        assert turn_queries.store(connection, claims[0], TurnState.generated, **values)
        statement = turn_queries._storing("postgresql", TurnState.generating, TurnState.generated, False, tuple(sorted(values)))
        params = {"turn_id": theirs, "attempt": claims[1].attempt, "now": None, **{f"v_{k}": v for k, v in values.items()}}
        assert connection.execute(statement, params).rowcount == 1
        assert not turn_queries.store(connection, claims[0], TurnState.generated, **values)  # stored already: the claim holds nothing
    stored = {row.pop("id"): row for row in rows(db, "SELECT * FROM turns WHERE id IN (:ours, :theirs)", ours=ours, theirs=theirs)}
    differing = {"trajectory_id", "updated_at", "created_at", "claimed_by"}
    typed = lambda row: {k: (type(v), v) for k, v in row.items() if k not in differing}  # noqa: E731
    assert typed(stored[ours]) == typed(stored[theirs])
    assert stored[ours]["finish_reason"] is None and stored[ours]["generation_meta"]["nested"] == [1, None, "x"]
    assert rows(db, "SELECT finish_reason IS NULL AS sql_null, jsonb_typeof(finish_reason) AS kind FROM turns WHERE id = :id", id=ours) == \
        rows(db, "SELECT finish_reason IS NULL AS sql_null, jsonb_typeof(finish_reason) AS kind FROM turns WHERE id = :id", id=theirs)

"""How Postgres plans the stages' statements on a run just created: a claim or a store finds its turn
by primary key, before `turns` has statistics and after, whether the plan is made for the values
(a statement's first runs) or once for any (psycopg prepares a statement run five times). With an
index led by `state`, a claim walked the entries of every turn in its state: a run's claims cost N².

Each test has a database of its own, with autovacuum off, so that no statistics arrive unless the
test gathers them."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, event
from sqlalchemy.dialects import postgresql

from db import runs as run_queries
from db import turns as turn_queries
from db.migrate import upgrade
from db.models import TurnState, utcnow
from db.session import engine_for, session_scope, statement_scope
from orchestrator.settings import to_sqlalchemy_url
from tests.conftest import PG_ADMIN_URL

pytestmark = pytest.mark.integration

TRAJECTORIES = 2000
PROBLEM = run_queries.NewProblem("1_ReLU", 1, "source", "1" * 64, "a/1_ReLU.py")
OTHER_PROBLEM = run_queries.NewProblem("2_Add", 1, "source", "2" * 64, "a/2_Add.py")
PLAN_MODES = ("force_custom_plan", "force_generic_plan")


@contextmanager
def fresh_database() -> Iterator[tuple[str, str]]:
    """(psycopg URL, SQLAlchemy URL) of a new database at the newest schema, autovacuum off."""
    name = f"kturn_plans_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN_URL.rpartition('/')[0]}/{name}"
    sqlalchemy_url = to_sqlalchemy_url(url)
    try:
        upgrade(sqlalchemy_url)
        sql(url, *[f"ALTER TABLE {table} SET (autovacuum_enabled = false)" for table in ("turns", "trajectories", "runs", "problems")])
        yield url, sqlalchemy_url
    finally:
        engine_for(sqlalchemy_url).dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sql(url: str, *statements: str, params: tuple = ()) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement, params)


def new_run(sqlalchemy_url: str, problem: run_queries.NewProblem) -> list[int]:
    """A run of TRAJECTORIES trajectories: their first turns, pending."""
    with session_scope(sqlalchemy_url) as session:
        return run_queries.create(session, {"max_turns": 3}, [problem], samples=TRAJECTORIES)[1]


def scans_of_turns(url: str, sql: str, params: dict[str, Any] | tuple, mode: str) -> list[dict[str, Any]]:
    """The plan nodes that scan the table `turns` under its own name (not as `earlier`)."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"SET plan_cache_mode = {mode}")
        [[plan]] = connection.execute("EXPLAIN (FORMAT JSON) " + sql, params, prepare=True).fetchall()
    return [node for node in _nodes(plan[0]["Plan"]) 
            if "Scan" in node["Node Type"] and node.get("Relation Name") == "turns" and node.get("Alias") == "turns"]


def _nodes(node: dict[str, Any]):
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def compiled(statement, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    sql = statement.compile(dialect=postgresql.psycopg.dialect())
    return sql.string, sql.construct_params(values)


def by_id(url: str, sql: str, params, mode: str) -> list[tuple[str, str | None]]:
    return [(node["Node Type"], node.get("Index Name")) for node in scans_of_turns(url, sql, params, mode)]


@pytest.mark.parametrize("statistics", ["none", "taken after the run was created", "taken before the run, with every turn done"])
def test_a_claim_and_a_store_find_their_turn_by_primary_key(statistics):
    with fresh_database() as (url, sqlalchemy_url):
        if statistics.startswith("taken before"):
            new_run(sqlalchemy_url, OTHER_PROBLEM)
            sql(url, "UPDATE turns SET state = 'done'", "VACUUM ANALYZE turns")
        first_turns = new_run(sqlalchemy_url, PROBLEM)
        if statistics.startswith("taken after"):
            sql(url, "ANALYZE")
        claim = compiled(turn_queries._claiming_with_context(TurnState.pending, TurnState.generating),
                         {"turn_id": first_turns[7], "worker": "w", "lease": timedelta(seconds=60)})
        store = compiled(turn_queries._storing("postgresql", TurnState.generating, TurnState.generated, False, ("raw_response",)),
                         {"turn_id": first_turns[7], "attempt": 1, "now": utcnow(), "v_raw_response": "answer"})
        for mode in PLAN_MODES:
            assert by_id(url, *claim, mode) == [("Index Scan", "turns_pkey")], mode
            assert by_id(url, *store, mode) == [("Index Scan", "turns_pkey")], mode


def test_the_reconcilers_queries_keep_an_index_of_their_own():
    """Most turns done, a few waiting and a few working with their lease run out: each of the
    reconciler's queries reads its partial index, not the table."""
    with fresh_database() as (url, sqlalchemy_url):
        first_turns = new_run(sqlalchemy_url, PROBLEM)
        sql(url, "UPDATE turns SET state = 'done' WHERE id <> ALL(%s)", params=(first_turns[:40],))
        sql(url, "UPDATE turns SET state = 'generating', lease_expires_at = now() - interval '1 hour' WHERE id = ANY(%s)",
            params=(first_turns[:20],))
        sql(url, "ANALYZE")
        waiting, expired = reconciler_statements(sqlalchemy_url)
        for mode in PLAN_MODES:
            assert {index for _node, index in by_id(url, *waiting, mode)} == {"ix_turns_waiting_since"}, mode
            assert {index for _node, index in by_id(url, *expired, mode)} == {"ix_turns_working_lease"}, mode


def reconciler_statements(sqlalchemy_url: str) -> list[tuple[str, Any]]:
    """What the reconciler's two queries send, as sent (20 turns each here)."""
    sent = []
    listener = lambda _c, _cursor, statement, params, _context, _many: sent.append((statement, params))  # noqa: E731
    event.listen(Engine, "before_cursor_execute", listener)  # every engine: the test's own and kturn's
    try:
        with statement_scope(sqlalchemy_url) as db:
            assert len(turn_queries.waiting_since(db, utcnow(), limit=2000)) == 20
            assert len(turn_queries.expired_leases(db, utcnow(), limit=2000)) == 20
    finally:
        event.remove(Engine, "before_cursor_execute", listener)
    return sent

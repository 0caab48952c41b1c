"""How the database plans the stages' statements and the reconciler's. A claim or a store finds its
turn by primary key, on a run just created, before `turns` has statistics and after, in the plan
made for the values (a statement's first runs) and in the one made for any values (psycopg
prepares a statement run five times, and Postgres may then keep a generic plan): with an index led
by `state`, a claim walked the entries of every turn in its state, so a run's claims cost N². The
reconciler's queries read their partial indexes, on Postgres and on the embedded SQLite.

Plans are those of the statements as they run: Postgres's auto_explain reports each one to the
client, in a transaction rolled back afterwards. Each test has a database of its own, autovacuum
off, so that no statistics arrive unless the test gathers them."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import event
from sqlalchemy.dialects import postgresql

from db import runs as run_queries
from db import turns as turn_queries
from db.migrate import upgrade
from db.models import TurnState, utcnow
from db.session import engine_for, session_scope, statement_scope
from orchestrator.settings import to_sqlalchemy_url
from tests.conftest import PG_ADMIN_URL

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


def plan_of(url: str, statement: str, params: dict[str, Any], mode: str) -> dict[str, Any]:
    """The plan `statement` ran with, prepared as psycopg prepares it, under `mode`."""
    reported: list[str] = []
    with psycopg.connect(url) as connection:
        connection.add_notice_handler(lambda notice: reported.append(notice.message_primary))
        try:
            connection.execute("LOAD 'auto_explain'")
        except psycopg.Error as error:
            pytest.skip(f"this Postgres has no auto_explain: {error}")
        for setting in ("auto_explain.log_min_duration = 0", "auto_explain.log_format = json", "auto_explain.log_level = notice",
                        f"plan_cache_mode = {mode}"):
            connection.execute(f"SET {setting}")
        connection.execute(statement, params, prepare=True)
        connection.rollback()
    [plan] = [json.loads(message.partition("plan:")[2]) for message in reported if "plan:" in message]
    return plan["Plan"]


def scans_of_turns(plan: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(node type, index) of each node that scans `turns` under its own name (not as `earlier`)."""
    nodes = [plan]
    scans = []
    while nodes:
        node = nodes.pop()
        nodes.extend(node.get("Plans", []))
        if "Scan" in node["Node Type"] and node.get("Relation Name") == "turns" and node.get("Alias") == "turns":
            scans.append((node["Node Type"], node.get("Index Name")))
    return scans


def compiled(statement, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    sql_ = statement.compile(dialect=postgresql.psycopg.dialect())
    return sql_.string, sql_.construct_params(values)


@pytest.mark.integration
@pytest.mark.parametrize("statistics", ["none", "taken after the run was created", "taken before the run, with every turn done"])
def test_a_claim_and_a_store_find_their_turn_by_primary_key(statistics):
    with fresh_database() as (url, sqlalchemy_url):
        if statistics.startswith("taken before"):
            new_run(sqlalchemy_url, OTHER_PROBLEM)
            sql(url, "UPDATE turns SET state = 'done'", "VACUUM ANALYZE turns")
        first_turns = new_run(sqlalchemy_url, PROBLEM)
        if statistics.startswith("taken after"):
            sql(url, "ANALYZE")
        sql(url, "UPDATE turns SET state = 'generating', attempts = 1 WHERE id = %s", params=(first_turns[8],))
        claim = compiled(turn_queries._claiming_with_context(TurnState.pending, TurnState.generating),
                         {"turn_id": first_turns[7], "worker": "w", "lease": timedelta(seconds=60)})
        store = compiled(turn_queries._storing("postgresql", TurnState.generating, TurnState.generated, False, ("raw_response",)),
                         {"turn_id": first_turns[8], "attempt": 1, "now": utcnow(), "v_raw_response": "answer"})
        for mode in PLAN_MODES:
            assert scans_of_turns(plan_of(url, *claim, mode)) == [("Index Scan", "turns_pkey")], mode
            assert scans_of_turns(plan_of(url, *store, mode)) == [("Index Scan", "turns_pkey")], mode


@pytest.mark.integration
def test_the_reconcilers_queries_read_their_partial_index_on_postgres():
    """Most turns done, 20 waiting and 20 working with their lease run out."""
    with fresh_database() as (url, sqlalchemy_url):
        first_turns = new_run(sqlalchemy_url, PROBLEM)
        sql(url, "UPDATE turns SET state = 'done' WHERE id <> ALL(%s)", params=(first_turns[:40],))
        sql(url, "UPDATE turns SET state = 'generating', lease_expires_at = now() - interval '1 hour' WHERE id = ANY(%s)",
            params=(first_turns[:20],))
        sql(url, "ANALYZE")
        waiting, expired = reconciler_statements(sqlalchemy_url, waiting=20, expired=20)
        for mode in PLAN_MODES:
            assert {index for _node, index in scans_of_turns(plan_of(url, *waiting, mode))} == {"ix_turns_waiting_since"}, mode
            assert {index for _node, index in scans_of_turns(plan_of(url, *expired, mode))} == {"ix_turns_working_lease"}, mode


def test_the_reconcilers_queries_read_their_partial_index_on_sqlite(tmp_path):
    """SQLite takes a partial index only for a query whose condition has the index's very terms."""
    sqlalchemy_url = f"sqlite:///{tmp_path}/kturn.db"
    upgrade(sqlalchemy_url)
    new_run(sqlalchemy_url, PROBLEM)
    waiting, expired = reconciler_statements(sqlalchemy_url, waiting=TRAJECTORIES, expired=0)
    with engine_for(sqlalchemy_url).connect() as connection:
        for (statement, params), index in ((waiting, "ix_turns_waiting_since"), (expired, "ix_turns_working_lease")):
            details = [row[-1] for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)]
            assert any(f"USING INDEX {index}" in detail for detail in details), details
    engine_for(sqlalchemy_url).dispose()


def reconciler_statements(sqlalchemy_url: str, waiting: int, expired: int) -> list[tuple[str, Any]]:
    """What the reconciler's two queries send, as sent, checking that they find `waiting` turns
    waiting and `expired` turns whose lease ran out."""
    sent = []
    with statement_scope(sqlalchemy_url) as db:
        engine = db.engine
    listener = lambda _c, _cursor, statement, params, _context, _many: sent.append((statement, params))  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        with statement_scope(sqlalchemy_url) as db:
            assert len(turn_queries.waiting_since(db, utcnow() + timedelta(hours=1), limit=2000)) == waiting
            assert len(turn_queries.expired_leases(db, utcnow(), limit=2000)) == expired
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    return sent
